"""Request inputs of the HTTP service: limits, base64 and image decoding, regions, the frame cache and
the bundled example frames. Everything is decoded from the request itself; nothing names a server path."""
import base64
import binascii
import functools
import io
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from smolrgpt.data.sample import Region
from smolrgpt.engine import Frame
from smolrgpt.processing.regions import RegionDecodeError, regions_to_grid
from smolrgpt.processing.regions import parse_region as parse_region_spec


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
def parse_region(spec: Any, k: int, image_size: tuple[int, int], limits: Limits,
                 mask_files: list[bytes] | None = None, used: set | None = None) -> Region:
    """One region from a request: what processing.regions.parse_region reads, with masks sent as base64
    images ({"mask": ...}) or as uploaded files ({"mask_file": i}, multipart)."""
    where = f"region {k}"

    def masks(kind: str, data) -> Region:
        if kind == "mask":
            img = open_image_bytes(decode_base64(data, f"{where} (mask)"), f"{where} (mask)", limits, image_size)
            return Region("mask", mask_array(img))
        if kind == "mask_file":
            if mask_files is None:
                raise _unprocessable(f"{where}: mask_file refers to an uploaded file; only multipart requests "
                                     "have them")
            if not (isinstance(data, int) and not isinstance(data, bool) and 0 <= data < len(mask_files)):
                raise _unprocessable(f"{where}: mask_file must be an index of the {len(mask_files)} uploaded "
                                     f"'masks' file(s), got {data!r}")
            if used is not None:
                used.add(data)
            img = open_image_bytes(mask_files[data], f"{where} (masks file {data})", limits, image_size)
            return Region("mask", mask_array(img))
        raise _unprocessable(f"{where}: unknown region kind {kind!r}; use one of rle, box, polygon, mask"
                             + (", mask_file" if mask_files is not None else ""))

    try:
        return parse_region_spec(spec, where, masks, kinds="rle, box, polygon, mask, mask_file")
    except RegionDecodeError as exc:
        raise _unprocessable(str(exc)) from None


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
    from smolrgpt.synth.example import example_frame

    rgb, depth, question, boxes = example_frame(seed, width, height)
    return Example(f"warehouse-{seed}", f"synthetic warehouse {seed}", rgb, depth, question, boxes)


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
