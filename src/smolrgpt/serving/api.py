"""`smolrgpt serve`: the HTTP service (FastAPI) and the web page.

Endpoints (OpenAPI at /openapi.json, docs at /docs):
  POST   /v1/ask              image + depth (or a frame_id) + regions + question -> answer (JSON or multipart)
  POST   /v1/frames           upload a frame once -> frame_id; later questions reuse its vision features
  DELETE /v1/frames/{id}      forget a frame
  GET    /v1/examples         bundled synthetic example frames (GET /v1/examples/{name}/image.png, depth.png)
  GET    /health              model, sizes, queue depth, uptime
  GET    /                    the web page (static files in serving/web/)

Safety: every input is decoded from the request itself (base64 in JSON, or uploaded files); a value that
names a path is refused, never opened. Body size, image pixels, question length and region count are
bounded; malformed input gets a 4xx with a one-line `detail`; a full queue gets 503. The engine is only
ever called from the batcher's worker thread (see batcher.py).
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from smolrgpt.data.sample import MASK_TAG, Region
from smolrgpt.engine import Frame, Question
from smolrgpt.errors import SampleError
from smolrgpt.processing.images import DEPTH_POLARITIES
from smolrgpt.processing.regions import RegionDecodeError, regions_to_grid
from smolrgpt.serving.batcher import Batcher, QueueFull

WEB_DIR = Path(__file__).with_name("web")


# ----------------------------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 7680 * 4320  # 8K UHD
    max_question_chars: int = 4000
    max_regions: int = 64
    max_new_tokens: int = 512


class RequestError(Exception):
    """A request the service refuses: HTTP status and a one-line message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _unprocessable(message: str) -> RequestError:
    return RequestError(422, message)


# ------------------------------------------------------------------------------------- decoding inputs
_PATH_LIKE = re.compile(r"^(~|\.{0,2}[/\\]|[A-Za-z]:[/\\]|file:)|\\|\.[A-Za-z0-9]{1,5}$")
_PATH_HINT = "the server never reads files or URLs named by a request: send the content itself"


def _looks_like_path(text: str) -> bool:
    return len(text) < 4096 and bool(_PATH_LIKE.search(text.strip()))


def decode_base64(value: Any, what: str) -> bytes:
    """Bytes from a base64 string (a `data:...;base64,` URL prefix is allowed). Paths are refused."""
    if not isinstance(value, str):
        raise _unprocessable(f"{what}: expected a base64 string, got {type(value).__name__}")
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise _unprocessable(f"{what}: a data URL must be base64-encoded (data:<type>;base64,...)")
    try:
        data = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError):
        if _looks_like_path(text):
            raise _unprocessable(f"{what}: looks like a file path ({text[:80]!r}); {_PATH_HINT}") from None
        raise _unprocessable(f"{what}: not valid base64") from None
    if not data:
        raise _unprocessable(f"{what}: empty")
    if _looks_like_path(text) and not _is_image_bytes(data):
        raise _unprocessable(f"{what}: looks like a file path ({text[:80]!r}); {_PATH_HINT}")
    return data


def _is_image_bytes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Exception:  # noqa: BLE001
        return False


def open_image_bytes(data: bytes, what: str, limits: Limits, expect_size: tuple[int, int] | None = None):
    """A fully decoded PIL image from bytes; the pixel limit and the expected size are checked on the
    header, before decoding."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise RequestError(413, f"{what}: too large to decode") from None
    except Exception:  # noqa: BLE001 - PIL raises many types on garbage
        raise _unprocessable(f"{what}: not an image (PNG, JPEG, TIFF, ... expected)") from None
    w, h = img.size
    if w * h > limits.max_image_pixels:
        raise RequestError(413, f"{what}: {w}x{h} = {w * h:,} pixels, more than this server's limit of "
                                f"{limits.max_image_pixels:,}")
    if w < 1 or h < 1:
        raise _unprocessable(f"{what}: no pixels")
    if expect_size is not None and (h, w) != tuple(expect_size):
        raise _unprocessable(f"{what}: mask size {h}x{w} differs from the image size {expect_size[0]}x{expect_size[1]}")
    try:
        img.load()
    except Image.DecompressionBombError:
        raise RequestError(413, f"{what}: too large to decode") from None
    except Exception as exc:  # noqa: BLE001
        raise _unprocessable(f"{what}: cannot be decoded ({type(exc).__name__}: {exc})") from None
    return img


# --------------------------------------------------------------------------------------------- regions
def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_region(spec: Any, k: int, image_size: tuple[int, int], limits: Limits,
                 mask_files: list[bytes] | None = None, used: set | None = None) -> Region:
    """One region from a request: {"rle": {...}}, {"box": [x1, y1, x2, y2]}, {"polygon": [[x, y, ...]]},
    {"mask": base64 image}, {"mask_file": i} (multipart), a bare COCO RLE dict or a 4-number box."""
    where = f"region {k}"
    if isinstance(spec, list):
        if len(spec) == 4 and all(_number(v) for v in spec):
            return Region("box", [float(v) for v in spec])
        raise _unprocessable(f"{where}: a list region must be a box [x1, y1, x2, y2] of 4 numbers")
    if not isinstance(spec, dict):
        raise _unprocessable(f"{where}: a region must be an object such as {{\"box\": [x1, y1, x2, y2]}}, "
                             f"got {type(spec).__name__}")
    if "counts" in spec and "size" in spec and len(spec) == 2:
        spec = {"rle": spec}
    if len(spec) != 1:
        raise _unprocessable(f"{where}: a region needs exactly one key of rle, box, polygon, mask, mask_file; "
                             f"got {sorted(spec)}")
    (kind, data), = spec.items()
    if kind == "box":
        if not (isinstance(data, list) and len(data) == 4 and all(_number(v) for v in data)):
            raise _unprocessable(f"{where} (box): a box must be [x1, y1, x2, y2], 4 numbers")
        return Region("box", [float(v) for v in data])
    if kind == "rle":
        if not (isinstance(data, dict) and set(data) == {"size", "counts"}):
            raise _unprocessable(f"{where} (rle): RLE must be an object with exactly 'size' and 'counts'")
        size, counts = data["size"], data["counts"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in size)):
            raise _unprocessable(f"{where} (rle): size must be [height, width]")
        if isinstance(counts, str):
            if not counts.isascii():
                raise _unprocessable(f"{where} (rle): compressed counts must be an ASCII string")
        elif not (isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)):
            raise _unprocessable(f"{where} (rle): counts must be a compressed string or a list of run lengths")
        return Region("rle", {"size": list(size), "counts": counts})
    if kind == "polygon":
        polys = data if isinstance(data, list) and data and isinstance(data[0], list) else [data]
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_number(v) for v in p)
                   for p in polys):
            raise _unprocessable(f"{where} (polygon): a polygon is a flat list [x0, y0, x1, y1, ...] of at "
                                 "least 3 points (or a list of such lists)")
        return Region("polygon", [[float(v) for v in p] for p in polys])
    if kind == "mask":
        img = open_image_bytes(decode_base64(data, f"{where} (mask)"), f"{where} (mask)", limits, image_size)
        return Region("mask", mask_array(img))
    if kind == "mask_file":
        if mask_files is None:
            raise _unprocessable(f"{where}: mask_file refers to an uploaded file; only multipart requests have them")
        if not (isinstance(data, int) and not isinstance(data, bool) and 0 <= data < len(mask_files)):
            raise _unprocessable(f"{where}: mask_file must be an index of the {len(mask_files)} uploaded "
                                 f"'masks' file(s), got {data!r}")
        if used is not None:
            used.add(data)
        img = open_image_bytes(mask_files[data], f"{where} (masks file {data})", limits, image_size)
        return Region("mask", mask_array(img))
    raise _unprocessable(f"{where}: unknown region kind {kind!r}; use one of rle, box, polygon, mask"
                         + (", mask_file" if mask_files is not None else ""))


def mask_array(img: Image.Image) -> np.ndarray:
    """A mask image as the region pipeline reads a mask file: colour, palette and alpha images by their
    luminance (an opaque black RGBA pixel is outside), single-channel images as they are."""
    return np.asarray(img if img.mode in ("L", "1", "I", "I;16", "F") else img.convert("L"))


def check_regions(regions: list[Region], image_size: tuple[int, int], grid: int) -> None:
    """Decode each region onto the pooling grid now (numpy only), so a bad region fails this request alone
    with a message naming it, instead of failing a whole batch later."""
    for k, region in enumerate(regions):
        try:
            regions_to_grid([region], image_size, grid)
        except RegionDecodeError as exc:
            raise _unprocessable(f"region {k} ({region.kind}): {str(exc).split(': ', 1)[-1]}") from None
        except Exception as exc:  # noqa: BLE001 - e.g. pycocotools on corrupt counts
            raise _unprocessable(f"region {k} ({region.kind}): cannot decode ({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------------------- frame cache
class FrameCache:
    """Uploaded frames by id, least recently used evicted first. Each keeps its vision features once
    computed, so later questions about it skip the encoders."""

    def __init__(self, capacity: int = 16):
        self.capacity = max(0, int(capacity))
        self._frames: OrderedDict[str, Frame] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, frame: Frame) -> None:
        with self._lock:
            self._frames[frame.id] = frame
            self._frames.move_to_end(frame.id)
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)

    def get(self, frame_id: str) -> Frame | None:
        with self._lock:
            frame = self._frames.get(frame_id)
            if frame is not None:
                self._frames.move_to_end(frame_id)
            return frame

    def delete(self, frame_id: str) -> bool:
        with self._lock:
            return self._frames.pop(frame_id, None) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)


# ---------------------------------------------------------------------------------------------- examples
@dataclass
class Example:
    name: str
    title: str
    rgb: np.ndarray
    depth: np.ndarray
    question: str
    regions: list[list[int]]
    png: dict = field(default_factory=dict)

    def image_png(self, which: str) -> bytes:
        if which not in self.png:
            buf = io.BytesIO()
            Image.fromarray(self.rgb if which == "image" else self.depth).save(buf, format="PNG", optimize=True)
            self.png[which] = buf.getvalue()
        return self.png[which]

    def describe(self) -> dict:
        h, w = self.depth.shape
        return {"name": self.name, "title": self.title, "width": w, "height": h,
                "image_url": f"/v1/examples/{self.name}/image.png", "depth_url": f"/v1/examples/{self.name}/depth.png",
                "depth_polarity": "far_bright", "question": self.question,
                "regions": [{"box": b} for b in self.regions]}


def _synthetic_example(seed: int, width: int, height: int) -> Example:
    """A frame of the built-in synthetic warehouse generator, with the two most visible pallets as
    suggested regions."""
    from smolrgpt.synth import writer
    from smolrgpt.synth.render import render
    from smolrgpt.synth.scene import generate_scene

    scene = generate_scene(np.random.default_rng([seed, 7]), width, height)
    rendering = render(scene)
    depth8 = writer.encode_depth(rendering.depth)[0]
    boxes = []
    pallets = [o.instance_id for o in scene.objects if o.cls == "pallet"]
    for iid in sorted(pallets, key=lambda i: -int(rendering.visible_pixels[i]))[:2]:
        ys, xs = np.nonzero(rendering.instances == iid)
        if len(xs):
            boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    question = "How far is the pallet <mask> from the pallet <mask>?" if len(boxes) == 2 else "Describe the scene."
    return Example(f"warehouse-{seed}", f"synthetic warehouse {seed}", np.ascontiguousarray(rendering.rgb),
                   np.ascontiguousarray(depth8), question, boxes)


def _procedural_example(seed: int, width: int, height: int) -> Example:
    """A plain drawn scene (floor, two boxes) for when the synthetic generator is unavailable."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[...] = (np.array([190, 190, 185]) * (0.7 + 0.3 * ys)[..., None]).astype(np.uint8)
    depth = np.repeat((255 * (1 - ys) ** 1.5).astype(np.uint8), width, axis=1)
    boxes = []
    for k in range(2):
        bw, bh = int(width * rng.uniform(0.12, 0.2)), int(height * rng.uniform(0.15, 0.25))
        x = int(width * (0.15 + 0.45 * k) + rng.integers(0, width // 10))
        y = int(height * rng.uniform(0.45, 0.65))
        rgb[y:y + bh, x:x + bw] = (150 + 20 * k, 110, 60)
        depth[y:y + bh, x:x + bw] = depth[min(height - 1, y + bh), x]
        boxes.append([x, y, x + bw, y + bh])
    return Example(f"drawn-{seed}", f"drawn scene {seed}", rgb, depth,
                   "How far is the pallet <mask> from the pallet <mask>?", boxes)


@functools.lru_cache(maxsize=1)
def bundled_examples(count: int = 2, width: int = 640, height: int = 360) -> tuple[Example, ...]:
    """Example frames made on first use (nothing binary is shipped): synthetic warehouse frames when the
    generator is importable, simple drawn frames otherwise."""
    out = []
    for seed in range(count):
        try:
            out.append(_synthetic_example(seed, width, height))
        except Exception:  # noqa: BLE001 - the generator is optional for serving
            out.append(_procedural_example(seed, width, height))
    return tuple(out)


# -------------------------------------------------------------------------------------- request schemas


class FrameFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, description="RGB image: base64 (PNG, JPEG, ...), a data: URL allowed")
    depth: str | None = Field(None, description="depth map: base64 image (8/16-bit or float TIFF)")
    depth_polarity: Literal["far_bright", "near_bright"] | None = Field(
        None, description="far_bright (warehouse data, default) or near_bright (Open Spatial Dataset)")


class AskBody(FrameFields):
    question: str = Field(..., description="the question; its k-th <mask> refers to regions[k]",
                          examples=["How far is the pallet <mask> from the pallet <mask>?"])
    regions: list[Any] = Field(default_factory=list, description=(
        'regions in <mask> order: {"box": [x1, y1, x2, y2]}, {"rle": {"size": [h, w], "counts": ...}}, '
        '{"polygon": [[x0, y0, ...]]}, {"mask": base64 image}, a bare COCO RLE dict or a 4-number box'))
    frame_id: str | None = Field(None, description="a frame uploaded with POST /v1/frames, instead of image/depth")
    max_new_tokens: int | None = Field(None, ge=1, description="answer length limit in tokens")
    id: str | None = Field(None, max_length=200, description="echoed back in the answer")


class AskResponse(BaseModel):
    id: str | None = None
    answer: str
    category: str | None
    normalized_answer: str | None
    frame_id: str | None = None
    timings: dict[str, float | int]


class FrameResponse(BaseModel):
    frame_id: str
    width: int
    height: int
    has_depth: bool
    depth_polarity: str
    cached_frames: int


def _multipart_schema(extra: dict) -> dict:
    return {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary", "description": "RGB image file"},
        "depth": {"type": "string", "format": "binary", "description": "depth map file"},
        "depth_polarity": {"type": "string", "enum": list(DEPTH_POLARITIES)}, **extra}}


_ASK_MULTIPART = _multipart_schema({
    "question": {"type": "string"},
    "masks": {"type": "array", "items": {"type": "string", "format": "binary"},
              "description": "mask images (non-zero = inside); without `regions` they are the regions in order"},
    "regions": {"type": "string", "description": 'JSON list of regions as in the JSON body; {"mask_file": i} '
                                                 "refers to the i-th uploaded `masks` file"},
    "frame_id": {"type": "string"}, "max_new_tokens": {"type": "integer"}, "id": {"type": "string"}})


def _body_doc(model: type[BaseModel], multipart: dict) -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema()},
        "multipart/form-data": {"schema": multipart}}}}


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            hint = f" ({_PATH_HINT})" if re.search(r"path|file|url|dir", loc, re.I) else ""
            parts.append(f"unknown field {loc!r}{hint}")
        elif err["type"] == "missing":
            parts.append(f"missing field {loc!r}")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


@dataclass
class ParsedRequest:
    fields: dict
    image: bytes | None = None
    depth: bytes | None = None
    mask_files: list[bytes] | None = None


def _loads_strict(text: str | bytes):
    def refuse(name):
        raise ValueError(f"{name} is not a JSON number")
    return json.loads(text, parse_constant=refuse)


async def read_request(request: Request, limits: Limits, model: type[BaseModel]) -> ParsedRequest:
    """JSON (base64 images) or multipart (uploaded files): the fields validated by `model`, plus bytes.
    The body is read here; parsing and base64 decoding run in a worker thread, off the event loop."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return await run_in_threadpool(_parse_json_body, await request.body(), model)
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raw: dict[str, Any] = {}
        files: dict[str, list[bytes]] = {}
        try:
            async with request.form(max_files=limits.max_regions + 2, max_fields=64,
                                    max_part_size=limits.max_request_bytes) as form:
                for key, value in form.multi_items():
                    if hasattr(value, "read"):  # an uploaded file
                        files.setdefault(key, []).append(await value.read())
                    elif key in raw:
                        raise _unprocessable(f"field {key!r} is given twice")
                    else:
                        raw[key] = value
        except RequestError:
            raise
        except Exception as exc:  # noqa: BLE001 - starlette raises HTTPException/MultiPartException
            raise RequestError(400, f"malformed multipart body ({getattr(exc, 'detail', exc)})") from None
        return await run_in_threadpool(_parse_form, raw, files, model)
    raise RequestError(415, f"unsupported content type {ctype or '(none)'!r}: send application/json or "
                            "multipart/form-data")


def _parse_json_body(data: bytes, model: type[BaseModel]) -> ParsedRequest:
    try:
        obj = _loads_strict(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _unprocessable(f"the JSON body must be an object, got {type(obj).__name__}")
    try:
        fields = model.model_validate(obj).model_dump(exclude_unset=False)
    except ValidationError as exc:
        raise _unprocessable(_validation_message(exc)) from None
    image = decode_base64(fields.pop("image"), "image") if fields.get("image") is not None else None
    depth = decode_base64(fields.pop("depth"), "depth") if fields.get("depth") is not None else None
    fields.pop("image", None), fields.pop("depth", None)
    return ParsedRequest(fields, image, depth, None)


def _parse_form(raw: dict, files: dict, model: type[BaseModel]) -> ParsedRequest:
    for key in files:
        if key not in ("image", "depth", "masks", "mask"):
            raise _unprocessable(f"unexpected file field {key!r} (files: image, depth, masks)")
        if key in ("image", "depth") and (len(files[key]) > 1 or key in raw):
            raise _unprocessable(f"give one {key!r}")
    image = files["image"][0] if "image" in files else (decode_base64(raw.pop("image"), "image") if "image" in raw else None)
    depth = files["depth"][0] if "depth" in files else (decode_base64(raw.pop("depth"), "depth") if "depth" in raw else None)
    masks = files.get("masks", []) + files.get("mask", [])
    if masks and "regions" not in model.model_fields:
        raise _unprocessable("mask files belong to POST /v1/ask, not to a frame upload")
    if "regions" in raw:
        try:
            raw["regions"] = _loads_strict(raw["regions"])
        except ValueError as exc:
            raise _unprocessable(f"regions: not valid JSON ({exc})") from None
    try:
        fields = model.model_validate(raw).model_dump()
    except ValidationError as exc:
        raise _unprocessable(_validation_message(exc)) from None
    fields.pop("image", None), fields.pop("depth", None)
    if "regions" in fields and "regions" not in raw and masks:  # plain mask uploads: regions in order
        fields["regions"] = [{"mask_file": i} for i in range(len(masks))]
    return ParsedRequest(fields, image, depth, masks)


# ---------------------------------------------------------------------------------------------- service
class Service:
    """The state behind the app: engine, batcher, frame cache, limits."""

    def __init__(self, engine, *, max_batch: int = 8, batch_wait_ms: float = 10.0, queue_size: int = 64,
                 limits: Limits | None = None, frame_cache: int = 16, model_name: str | None = None):
        self.engine = engine
        engine.batch_size = max(engine.batch_size, max_batch)
        self.batcher = Batcher(engine, max_batch=max_batch, batch_wait_ms=batch_wait_ms, queue_size=queue_size)
        self.limits = limits or Limits()
        self.frames = FrameCache(frame_cache)
        self.model_name = model_name or "smolrgpt"
        self.started = time.time()
        self._model_info = None

    # -- frames ----------------------------------------------------------------------------------------
    def make_frame(self, parsed: ParsedRequest, frame_id: str) -> Frame:
        if parsed.image is None:
            raise _unprocessable("missing field 'image' (or give a 'frame_id' from POST /v1/frames)")
        image = open_image_bytes(parsed.image, "image", self.limits)
        depth = open_image_bytes(parsed.depth, "depth", self.limits) if parsed.depth is not None else None
        polarity = parsed.fields.get("depth_polarity") or "far_bright"
        try:
            return self.engine.frame(image, depth, depth_polarity=polarity, frame_id=frame_id)
        except SampleError as exc:
            raise _unprocessable(exc.reason) from None
        except Exception as exc:  # noqa: BLE001 - e.g. an image mode the transforms cannot use
            raise _unprocessable(f"cannot use the image ({type(exc).__name__}: {exc})") from None

    def upload_frame(self, parsed: ParsedRequest) -> dict:
        frame = self.make_frame(parsed, f"f-{secrets.token_hex(8)}")
        self.frames.put(frame)
        h, w = frame.image_size
        return {"frame_id": frame.id, "width": w, "height": h, "has_depth": frame.depth_values is not None,
                "depth_polarity": parsed.fields.get("depth_polarity") or "far_bright",
                "cached_frames": len(self.frames)}

    # -- questions -------------------------------------------------------------------------------------
    def prepare_question(self, parsed: ParsedRequest) -> tuple[Question, int | None]:
        f, limits = parsed.fields, self.limits
        question = f["question"]
        if not question.strip():
            raise _unprocessable("the question is empty")
        if len(question) > limits.max_question_chars:
            raise _unprocessable(f"the question is {len(question)} characters, more than {limits.max_question_chars}")
        if f.get("max_new_tokens") is not None and f["max_new_tokens"] > limits.max_new_tokens:
            raise _unprocessable(f"max_new_tokens must be at most {limits.max_new_tokens}")
        specs = f.get("regions") or []
        if len(specs) > limits.max_regions:
            raise _unprocessable(f"{len(specs)} regions, more than this server's limit of {limits.max_regions}")
        tags = question.count(MASK_TAG)
        if tags != len(specs):
            raise _unprocessable(f"the question has {tags} {MASK_TAG} tag(s) but {len(specs)} region(s) were given")
        if f.get("frame_id"):
            if parsed.image is not None or parsed.depth is not None:
                raise _unprocessable("give either frame_id or image/depth, not both")
            if f.get("depth_polarity"):
                raise _unprocessable("depth_polarity belongs to the frame: give it to POST /v1/frames")
            frame = self.frames.get(f["frame_id"])
            if frame is None:
                raise RequestError(404, f"unknown frame_id {f['frame_id']!r} (never uploaded, or evicted from "
                                        f"the cache of {self.frames.capacity} frames: upload it again)")
        else:
            frame = self.make_frame(parsed, f"request-{secrets.token_hex(4)}")
        if specs and frame.depth_values is None:
            raise _unprocessable("questions with regions need a depth map")
        used: set[int] = set()
        regions = [parse_region(s, k, frame.image_size, limits, parsed.mask_files, used) for k, s in enumerate(specs)]
        unused = sorted(set(range(len(parsed.mask_files or []))) - used)
        if unused:
            raise _unprocessable(f"uploaded masks file(s) {unused} are not referenced by any region")
        check_regions(regions, frame.image_size, self.engine.processor.mask_grid_size)
        return Question(frame, question, regions, f.get("id")), f.get("max_new_tokens")

    def model_info(self) -> dict:
        if self._model_info is None:
            from smolrgpt.modeling.config import PRESETS

            cfg = self.engine.model.config
            vision, text = cfg.vision_config, cfg.text_config
            preset = next((name for name, (v, t) in PRESETS.items()
                           if all(getattr(vision, k, None) == val for k, val in v.items())
                           and all(getattr(text, k, None) == val for k, val in t.items()
                                   if k in ("hidden_size", "num_hidden_layers", "intermediate_size"))), "custom")
            self._model_info = {
                "name": self.model_name, "preset": preset,
                "parameters": int(sum(p.numel() for p in self.engine.model.parameters())),
                "vision": {"hidden_size": vision.hidden_size, "layers": vision.num_hidden_layers,
                           "image_size": vision.image_size, "patch_size": vision.patch_size},
                "language": {"hidden_size": text.hidden_size, "layers": text.num_hidden_layers,
                             "vocab_size": text.vocab_size},
                "num_image_tokens": cfg.num_image_tokens, "mask_grid": cfg.mask_grid,
                "device": str(self.engine.device), "max_new_tokens": self.engine.max_new_tokens}
        return self._model_info

    def health(self) -> dict:
        b = self.batcher
        return {"status": "ok", "model": self.model_info(), "queue_depth": b.depth, "queue_size": b.queue_size,
                "max_batch": b.max_batch, "batch_wait_ms": b.batch_wait * 1000, "cached_frames": len(self.frames),
                "frame_cache_size": self.frames.capacity, "uptime_s": round(time.time() - self.started, 3),
                "questions_answered": b.questions_answered,
                "batches_run": b.batches_run, "largest_batch": b.largest_batch,
                "limits": {"max_request_bytes": self.limits.max_request_bytes,
                           "max_image_pixels": self.limits.max_image_pixels,
                           "max_regions": self.limits.max_regions}}


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit with 413 before any parsing (Content-Length checked
    first; chunked bodies are counted as they arrive), then replay the buffered body to the app."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def _refuse(self, send, status: int, message: str):
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit_mb = f"{self.max_bytes / 2**20:g} MB"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._refuse(send, 400, "invalid Content-Length header")
            if declared > self.max_bytes:
                return await self._refuse(send, 413, f"request body of {declared:,} bytes is over this server's "
                                                     f"limit of {limit_mb}")
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await self._refuse(send, 413, f"request body is over this server's limit of {limit_mb}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(engine, *, max_batch: int = 8, batch_wait_ms: float = 10.0, queue_size: int = 64,
               max_request_bytes: int = 20 * 2**20, max_image_pixels: int = Limits.max_image_pixels,
               frame_cache: int = 16, model_name: str | None = None) -> FastAPI:
    """The FastAPI app around a loaded engine. The batcher's worker starts and stops with the app."""
    from contextlib import asynccontextmanager

    service = Service(engine, max_batch=max_batch, batch_wait_ms=batch_wait_ms, queue_size=queue_size,
                      limits=Limits(max_request_bytes=int(max_request_bytes), max_image_pixels=int(max_image_pixels)),
                      frame_cache=frame_cache, model_name=model_name)

    @asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        try:
            yield
        finally:
            service.batcher.stop()

    app = FastAPI(title="SmolRGPT", version=_version(), lifespan=lifespan,
                  description="Spatial question answering on RGB + depth + region masks. The k-th `<mask>` "
                              "of a question refers to the k-th region.")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def _internal_error(request, exc: Exception):  # a bug or a model failure, never bad input
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    async def _answer(question: Question, max_new_tokens, decode_ms: float, t0: float) -> dict:
        try:
            answer, timings = await service.batcher.ask(question, max_new_tokens)
        except QueueFull as exc:
            raise RequestError(503, str(exc)) from None
        except SampleError as exc:  # e.g. a prompt longer than the model's max_length
            raise _unprocessable(exc.reason) from None
        timings = {"decode_ms": round(decode_ms, 2), **timings, "total_ms": round((time.perf_counter() - t0) * 1000, 2)}
        return {"id": answer.id, "answer": answer.text, "category": answer.category,
                "normalized_answer": answer.normalized_answer,
                "frame_id": question.frame.id if service.frames.get(question.frame.id) is question.frame else None,
                "timings": timings}

    @app.post("/v1/ask", response_model=AskResponse, openapi_extra=_body_doc(AskBody, _ASK_MULTIPART),
              responses={404: {"description": "unknown frame_id"}, 413: {"description": "body or image too large"},
                         415: {"description": "neither JSON nor multipart"}, 422: {"description": "malformed input"},
                         503: {"description": "server busy: queue full"}},
              summary="Answer a question about an RGB-D frame and its regions")
    async def ask(request: Request):
        """JSON: `{"question", "image", "depth", "regions", ...}` with base64 images, or multipart with files
        `image`, `depth`, `masks` and fields `question`, `regions` (JSON), ...; or a `frame_id` from
        POST /v1/frames instead of the images. Answers `{answer, category, normalized_answer, timings}`."""
        t0 = time.perf_counter()
        parsed = await read_request(request, service.limits, AskBody)
        question, max_new_tokens = await run_in_threadpool(service.prepare_question, parsed)
        return await _answer(question, max_new_tokens, (time.perf_counter() - t0) * 1000, t0)

    @app.post("/v1/frames", response_model=FrameResponse, status_code=201,
              openapi_extra=_body_doc(FrameFields, _multipart_schema({})),
              summary="Upload a frame once; ask about it by frame_id (its vision features are reused)")
    async def upload_frame(request: Request):
        parsed = await read_request(request, service.limits, FrameFields)
        return await run_in_threadpool(service.upload_frame, parsed)

    @app.delete("/v1/frames/{frame_id}", status_code=204, summary="Forget an uploaded frame")
    async def delete_frame(frame_id: str):
        if not service.frames.delete(frame_id):
            raise RequestError(404, f"unknown frame_id {frame_id!r}")
        return Response(status_code=204)

    @app.get("/health", summary="Model, sizes, queue depth, uptime")
    async def health():
        return service.health()

    @app.get("/v1/examples", summary="Bundled synthetic example frames (made on first use)")
    async def examples():
        return {"examples": [e.describe() for e in await run_in_threadpool(bundled_examples)]}

    @app.get("/v1/examples/{name}/{which}.png", summary="An example's RGB image or depth map (PNG)")
    async def example_file(name: str, which: str):
        found = {e.name: e for e in await run_in_threadpool(bundled_examples)}.get(name)
        if found is None or which not in ("image", "depth"):
            raise RequestError(404, f"no example file {name}/{which}.png")
        return Response(await run_in_threadpool(found.image_png, which), media_type="image/png",
                        headers={"cache-control": "max-age=3600"})

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(WEB_DIR / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def _version() -> str:
    from smolrgpt import __version__

    return __version__
