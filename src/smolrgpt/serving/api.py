"""`smolrgpt serve`: the HTTP service (FastAPI) and the web page.

Endpoints (OpenAPI at /openapi.json, docs at /docs):
  POST   /v1/ask              image + depth (or a frame_id) + regions + question -> answer (JSON or multipart)
  POST   /v1/frames           upload a frame once -> frame_id; later questions reuse its vision features
  DELETE /v1/frames/{id}      forget a frame
  GET    /v1/examples         bundled synthetic example frames (GET /v1/examples/{name}/image.png, depth.png)
  GET    /health              model, sizes, queue depth, uptime
  GET    /                    the web page (static files in serving/web/)

Request decoding and validation live in inputs.py.

Safety: every input is decoded from the request itself (base64 in JSON, or uploaded files); a value that
names a path is refused, never opened. Body size, image pixels, question length and region count are
bounded; malformed input gets a 4xx with a one-line `detail`; a full queue gets 503. The engine is only
ever called from the batcher's worker thread (see batcher.py).
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from smolrgpt.data.sample import MASK_TAG
from smolrgpt.engine import Frame, Question
from smolrgpt.errors import SampleError
from smolrgpt.processing.images import DEPTH_POLARITIES
from smolrgpt.serving.batcher import Batcher, QueueFull
from smolrgpt.serving.inputs import (_PATH_HINT, FrameCache, Limits, RequestError, _unprocessable, bundled_examples,
                                     check_regions, decode_base64, open_image_bytes, parse_region)

WEB_DIR = Path(__file__).with_name("web")


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

    @field_validator("max_new_tokens", mode="before")
    @classmethod
    def _no_boolean_length(cls, value):
        # pydantic's lax mode reads JSON true as 1; form fields still arrive as digit strings
        if isinstance(value, bool):
            raise PydanticCustomError("int_type", "Input should be a valid integer, not a boolean")
        return value


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


MAX_JSON_DEPTH = 32  # the deepest real request (a region list of polygons) is 4 levels


def _loads_strict(text: str | bytes, what: str = "the body"):
    """JSON without NaN/Infinity and at most MAX_JSON_DEPTH levels deep (a 100,000-level body would
    otherwise exhaust the parser's recursion)."""
    def refuse(name):
        raise ValueError(f"{name} is not a JSON number")
    try:
        obj = json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise RequestError(400, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    stack = [(obj, 1)]
    while stack:  # iterative: the depth check itself must not recurse
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise RequestError(400, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return obj


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
            raw["regions"] = _loads_strict(raw["regions"], "regions")
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
                "device": str(self.engine.device), "max_new_tokens": self.engine.max_new_tokens,
                "precision": getattr(self.engine.model, "inference_precision", "fp32"),
                "weight_layout": getattr(self.engine.model, "weight_layout", "row")}
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
