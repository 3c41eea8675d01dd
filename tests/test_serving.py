"""The HTTP service: answers equal the engine's, batching without cross-talk, frame cache, limits, and a
4xx with a clear message (never a 500) for every malformed request."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as coco_mask

from smolrgpt.data.sample import Region
from smolrgpt.serving.api import create_app

from serving_support import BackgroundServer, http_client, b64, frame_arrays, load_engine, png_bytes

HTTP = http_client()
Q2 = "How far is the pallet <mask> from the pallet <mask>?"
BOXES = [[0, 0, 40, 30], [80, 40, 150, 85]]
RGB, DEPTH = frame_arrays(0)
MAX_PIXELS = 100_000
MAX_BYTES = 1_000_000


@pytest.fixture(scope="module")
def reference():
    return load_engine()


def expected(reference, question, regions, rgb=RGB, depth=DEPTH, polarity="far_bright"):
    answer = reference.ask(reference.frame(rgb, depth, polarity), question, regions)
    return {"answer": answer.text, "category": answer.category, "normalized_answer": answer.normalized_answer}


def got(response) -> dict:
    assert response.status_code == 200, response.text
    data = response.json()
    return {k: data[k] for k in ("answer", "category", "normalized_answer")}


@pytest.fixture(scope="module")
def app():
    return create_app(load_engine(), max_batch=4, batch_wait_ms=5, queue_size=16, max_request_bytes=MAX_BYTES,
                      max_image_pixels=MAX_PIXELS, frame_cache=2, model_name="lively-tiny")


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def body(**overrides):
    out = {"question": Q2, "image": b64(RGB), "depth": b64(DEPTH), "regions": [{"box": b} for b in BOXES]}
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def rle(mask: np.ndarray) -> dict:
    enc = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(enc["size"]), "counts": enc["counts"].decode()}


def region_mask(y0, y1, x0, x1, size=(90, 160)):
    m = np.zeros(size, np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


# ------------------------------------------------------------------------------------------ answers
def test_json_answer_equals_the_engine(client, reference):
    r = client.post("/v1/ask", json=body(id="q-1"))
    assert got(r) == expected(reference, Q2, [Region("box", b) for b in BOXES])
    data = r.json()
    assert data["id"] == "q-1" and data["answer"]  # the lively model says something
    assert set(data["timings"]) == {"decode_ms", "queue_ms", "model_ms", "batch_size", "total_ms"}


def test_every_region_form_and_multipart(client, reference):
    m0, m1 = region_mask(5, 40, 10, 60), region_mask(50, 88, 90, 150)
    poly = [[100, 10, 150, 10, 150, 40, 100, 40]]
    question = "Compare <mask>, <mask>, <mask>, <mask> and <mask>."
    want = expected(reference, question, [Region("mask", m0), Region("rle", rle(m1)), Region("box", BOXES[0]),
                                          Region("polygon", poly), Region("rle", rle(m1))])
    regions = [{"mask": b64(m0)}, {"rle": rle(m1)}, BOXES[0], {"polygon": poly}, rle(m1)]
    assert got(client.post("/v1/ask", json=body(question=question, regions=regions))) == want
    # multipart: files, with regions mixing uploaded masks (by index) and inline forms, in <mask> order
    files = [("image", ("rgb.png", png_bytes(RGB))), ("depth", ("depth.png", png_bytes(DEPTH))),
             ("masks", ("m1.png", png_bytes(m1))), ("masks", ("m0.png", png_bytes(m0)))]
    regions = [{"mask_file": 1}, {"rle": rle(m1)}, {"box": BOXES[0]}, {"polygon": poly}, {"mask_file": 0}]
    r = client.post("/v1/ask", files=files, data={"question": question, "regions": json.dumps(regions)})
    assert got(r) == want
    # multipart with only mask files: they are the regions, in upload order
    files = files[:2] + [("masks", ("a.png", png_bytes(m0))), ("masks", ("b.png", png_bytes(m1)))]
    r = client.post("/v1/ask", files=files, data={"question": Q2})
    assert got(r) == expected(reference, Q2, [Region("mask", m0), Region("mask", m1)])


def test_depth_polarity_and_questions_without_regions(client, reference):
    r = client.post("/v1/ask", json=body(depth_polarity="near_bright"))
    assert got(r) == expected(reference, Q2, [Region("box", b) for b in BOXES], polarity="near_bright")
    r = client.post("/v1/ask", json={"question": "Describe the scene.", "image": b64(RGB)})
    assert got(r) == expected(reference, "Describe the scene.", [], depth=None)


def test_frame_cache_reuses_features_and_evicts(client, app, reference):
    engine = app.state.service.engine
    calls = []
    original = engine.model.encode_patches
    engine.model.encode_patches = lambda x: calls.append(x.shape[0]) or original(x)
    try:
        r = client.post("/v1/frames", json={"image": b64(RGB), "depth": b64(DEPTH)})
        assert r.status_code == 201
        frame = r.json()
        assert frame["width"] == 160 and frame["height"] == 90 and frame["has_depth"]
        questions = [("Is <mask> left of <mask>?", BOXES), ("How many pallets are in <mask>?", BOXES[:1]), (Q2, BOXES)]
        for question, boxes in questions:
            r = client.post("/v1/ask", json={"frame_id": frame["frame_id"], "question": question,
                                             "regions": [{"box": b} for b in boxes]})
            assert got(r) == expected(reference, question, [Region("box", b) for b in boxes])
            assert r.json()["frame_id"] == frame["frame_id"]
        assert calls == [2]  # RGB + depth encoded once for three questions
    finally:
        engine.model.encode_patches = original
    # the cache holds 2 frames: a third upload evicts the least recently used
    ids = [client.post("/v1/frames", files={"image": ("a.png", png_bytes(frame_arrays(s)[0]))}).json()["frame_id"]
           for s in (1, 2, 3)]
    r = client.post("/v1/ask", json={"frame_id": ids[0], "question": "Describe."})
    assert r.status_code == 404
    assert r.json() == {"detail": f"unknown frame_id {ids[0]!r} (never uploaded, or evicted from the cache of 2 "
                                  "frames: upload it again)"}
    assert client.post("/v1/ask", json={"frame_id": ids[2], "question": "Describe."}).status_code == 200
    assert client.delete(f"/v1/frames/{ids[2]}").status_code == 204
    assert client.delete(f"/v1/frames/{ids[2]}").status_code == 404


def test_concurrent_requests_are_batched_without_cross_talk(reference):
    """A real server: 8 different requests at once share model calls; each answer is its own."""
    engine = load_engine()
    active, peak, lock = [0], [0], threading.Lock()
    original = engine.ask_batch

    def guarded(*args, **kwargs):  # torch calls must never overlap
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    engine.ask_batch = guarded
    app = create_app(engine, max_batch=8, batch_wait_ms=2000, queue_size=16)  # a batch closes when 8 are in
    cases = []
    for k in range(8):
        rgb, depth = frame_arrays(k % 3)
        boxes = [[k, k, 40 + 3 * k, 30 + k], [80 - k, 40, 150, 85 - k]]
        question = [Q2, "Is the pallet <mask> left of the pallet <mask>?", "Which is closer, <mask> or <mask>?"][k % 3]
        cases.append((question, rgb, depth, boxes))
    want = [expected(reference, q, [Region("box", b) for b in boxes], rgb, depth) for q, rgb, depth, boxes in cases]
    assert len({w["answer"] for w in want}) > 3  # different answers, so a mix-up would show

    with BackgroundServer(app) as server:
        def send(case):
            q, rgb, depth, boxes = case
            return HTTP.post(f"{server.url}/v1/ask", timeout=60,
                              json={"question": q, "image": b64(rgb), "depth": b64(depth),
                                    "regions": [{"box": b} for b in boxes]})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(send, cases))
        health = HTTP.get(f"{server.url}/health").json()
    assert [got(r) for r in responses] == want
    assert peak[0] == 1
    assert health["largest_batch"] > 1 and health["batches_run"] < 8
    assert max(r.json()["timings"]["batch_size"] for r in responses) > 1


def test_full_queue_answers_503(reference):
    engine = load_engine()
    release, entered = threading.Event(), threading.Event()
    original = engine.ask_batch

    def blocked(*args, **kwargs):
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    engine.ask_batch = blocked
    app = create_app(engine, max_batch=1, batch_wait_ms=0, queue_size=1)
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.post, "/v1/ask", json=body())
        assert entered.wait(30)  # the worker holds request 1
        second = pool.submit(c.post, "/v1/ask", json=body())  # waits in the queue (size 1)
        deadline = time.time() + 30
        while app.state.service.batcher.depth < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert app.state.service.batcher.depth == 2
        third = c.post("/v1/ask", json=body())
        assert third.status_code == 503
        assert third.json() == {"detail": "server busy: queue full"}
        assert c.get("/health").json()["queue_depth"] == 2
        release.set()
        want = expected(reference, Q2, [Region("box", b) for b in BOXES])
        assert got(first.result(60)) == want and got(second.result(60)) == want


# ------------------------------------------------------------------------------------------- limits
def test_request_and_image_size_limits(client):
    r = client.post("/v1/ask", content=b"x" * (MAX_BYTES + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"detail": "request body of 1,000,001 bytes is over this server's limit of 0.953674 MB"}
    big = np.zeros((300, 400, 3), np.uint8)  # 120,000 pixels, PNG of a few KB: under the body limit
    r = client.post("/v1/ask", json={"question": "Describe.", "image": b64(big)})
    assert r.status_code == 413
    assert r.json() == {"detail": "image: 400x300 = 120,000 pixels, more than this server's limit of 100,000"}
    r = client.post("/v1/frames", files={"image": ("rgb.png", png_bytes(RGB)), "depth": ("d.png", png_bytes(big[..., 0]))})
    assert r.status_code == 413 and r.json()["detail"].startswith("depth: 400x300 = 120,000 pixels")


def test_chunked_body_over_the_limit_is_refused():
    app = create_app(load_engine(), max_request_bytes=1000)
    with TestClient(app) as c:
        r = c.post("/v1/ask", content=iter([b"{" + b" " * 600, b" " * 600 + b"}"]),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"detail": "request body is over this server's limit of 0.000953674 MB"}


# ------------------------------------------------------------------------------------ malformed input
def _truncated_png():
    data = png_bytes(DEPTH)
    return data[: len(data) // 2]


MASK_50 = np.full((50, 50), 255, np.uint8)
MALFORMED = [
    # (name, JSON body or (content, content type), status, detail)
    ("bad base64", body(image="!!!not base64!!!"), 422, "image: not valid base64"),
    ("not an image", body(image=base64.b64encode(b"hello, I am text").decode()), 422,
     "image: not an image (PNG, JPEG, TIFF, ... expected)"),
    ("undecodable depth", body(depth=base64.b64encode(_truncated_png()).decode()), 422, None),
    ("wrong mask size", body(regions=[{"mask": b64(MASK_50)}, BOXES[1]]), 422,
     "region 0 (mask): mask size 50x50 differs from the image size 90x160"),
    ("tag/region mismatch", body(question="Where is the pallet <mask>?"), 422,
     "the question has 1 <mask> tag(s) but 2 region(s) were given"),
    ("missing question", {"image": b64(RGB)}, 422, "missing field 'question'"),
    ("missing image", {"question": "Describe."}, 422,
     "missing field 'image' (or give a 'frame_id' from POST /v1/frames)"),
    ("question not a string", body(question=5), 422, "question: Input should be a valid string"),
    ("regions not a list", body(regions="two boxes"), 422, "regions: Input should be a valid list"),
    ("max_new_tokens not an integer", body(max_new_tokens="many"), 422,
     "max_new_tokens: Input should be a valid integer, unable to parse string as an integer"),
    ("max_new_tokens zero", body(max_new_tokens=0), 422, "max_new_tokens: Input should be greater than or equal to 1"),
    ("max_new_tokens too large", body(max_new_tokens=100000), 422, "max_new_tokens must be at most 512"),
    ("image not a string", body(image=[1, 2, 3]), 422, "image: Input should be a valid string"),
    ("huge image", body(question="Describe.", regions=[], depth=None, image=b64(np.zeros((400, 400), np.uint8))), 413,
     "image: 400x400 = 160,000 pixels, more than this server's limit of 100,000"),
    ("RGB/depth size mismatch", body(depth=b64(DEPTH[:80])), 422, "RGB is 90x160 but depth is 80x160"),
    ("unknown region kind", body(regions=[{"circle": [1, 2, 3]}, BOXES[1]]), 422,
     "region 0: unknown region kind 'circle'; use one of rle, box, polygon, mask"),
    ("two kinds in one region", body(regions=[{"box": BOXES[0], "rle": {}}, BOXES[1]]), 422,
     "region 0: a region needs exactly one key of rle, box, polygon, mask, mask_file; got ['box', 'rle']"),
    ("empty mask", body(regions=[{"mask": b64(np.zeros((90, 160), np.uint8))}, BOXES[1]]), 422,
     "region 0 (mask): the region is empty (no pixel inside)"),
    ("empty box", body(regions=[BOXES[0], [10, 10, 10, 20]]), 422,
     "region 1 (box): box [10.0, 10.0, 10.0, 20.0] is empty inside the 90x160 image"),
    ("box outside the image", body(regions=[BOXES[0], [500, 500, 600, 600]]), 422,
     "region 1 (box): box [500.0, 500.0, 600.0, 600.0] is empty inside the 90x160 image"),
    ("box of strings", body(regions=[{"box": ["a", "b", "c", "d"]}, BOXES[1]]), 422,
     "region 0 (box): a box must be [x1, y1, x2, y2], 4 numbers"),
    ("region a string", body(regions=["left pallet", BOXES[1]]), 422,
     "region 0: a region must be an object such as {\"box\": [x1, y1, x2, y2]}, got str"),
    ("RLE of another size", body(regions=[{"rle": {"size": [10, 10], "counts": [100]}}, BOXES[1]]), 422,
     "region 0 (rle): mask size 10x10 differs from the image size 90x160"),
    ("RLE run lengths wrong", body(regions=[{"rle": {"size": [90, 160], "counts": [5, 5]}}, BOXES[1]]), 422,
     "region 0 (rle): uncompressed RLE run lengths do not add up to 90x160"),
    ("corrupt compressed RLE", body(regions=[{"rle": {"size": [90, 160], "counts": "\u00e9\u00e9"}}, BOXES[1]]), 422,
     "region 0 (rle): compressed counts must be an ASCII string"),
    ("RLE without counts", body(regions=[{"rle": {"size": [90, 160]}}, BOXES[1]]), 422,
     "region 0 (rle): RLE must be an object with exactly 'size' and 'counts'"),
    ("bad polygon", body(regions=[{"polygon": [[1, 2, 3]]}, BOXES[1]]), 422,
     "region 0 (polygon): a polygon is a flat list [x0, y0, x1, y1, ...] of at least 3 points (or a list of such lists)"),
    ("regions without depth", body(depth=None), 422, "questions with regions need a depth map"),
    ("empty question", body(question="  ", regions=[]), 422, "the question is empty"),
    ("unknown field", body(foo=1), 422, "unknown field 'foo'"),
    ("bad depth polarity", body(depth_polarity="up"), 422,
     "depth_polarity: Input should be 'far_bright' or 'near_bright'"),
    ("too many regions", body(question="<mask>" * 65, regions=[BOXES[0]] * 65), 422,
     "65 regions, more than this server's limit of 64"),
    ("frame_id and image", body(frame_id="f-123"), 422, "give either frame_id or image/depth, not both"),
    ("unknown frame_id", {"question": "Describe.", "frame_id": "f-nope"}, 404,
     "unknown frame_id 'f-nope' (never uploaded, or evicted from the cache of 2 frames: upload it again)"),
    ("data URL not base64", body(image="data:image/png,abc"), 422,
     "image: a data URL must be base64-encoded (data:<type>;base64,...)"),
    ("body not JSON", (b"{not json", "application/json"), 400, None),
    ("NaN in JSON", (b'{"question": "Where?", "regions": [[NaN, 0, 1, 1]]}', "application/json"), 400,
     "the body is not valid JSON (NaN is not a JSON number)"),
    ("JSON list", (b"[1, 2]", "application/json"), 422, "the JSON body must be an object, got list"),
    ("plain text", (b"what is this?", "text/plain"), 415,
     "unsupported content type 'text/plain': send application/json or multipart/form-data"),
    ("no content type", (b"", ""), 415,
     "unsupported content type '(none)': send application/json or multipart/form-data"),
]


@pytest.mark.parametrize("name,request_body,status,detail", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_a_clear_4xx(client, name, request_body, status, detail):
    if isinstance(request_body, tuple):
        content, ctype = request_body
        r = client.post("/v1/ask", content=content, headers={"content-type": ctype} if ctype else {})
    else:
        r = client.post("/v1/ask", json=request_body)
    assert r.status_code == status, r.text
    message = r.json()["detail"]
    assert isinstance(message, str) and message
    if detail is not None:
        assert message == detail
    elif name == "body not JSON":
        assert message.startswith("the body is not valid JSON (")
    else:
        assert message.startswith("depth: cannot be decoded (")


MULTIPART_MALFORMED = [
    ("regions not JSON", {"question": Q2, "regions": "[{box"}, [], 422, "regions: not valid JSON ("),
    ("mask file not referenced", {"question": "Where is <mask>?", "regions": json.dumps([BOXES[0]])},
     [("masks", ("m.png", png_bytes(region_mask(0, 9, 0, 9))))], 422,
     "uploaded masks file(s) [0] are not referenced by any region"),
    ("mask_file out of range", {"question": "Where is <mask>?", "regions": json.dumps([{"mask_file": 3}])}, [], 422,
     "region 0: mask_file must be an index of the 0 uploaded 'masks' file(s), got 3"),
    ("unexpected file field", {"question": "Describe."}, [("other", ("x.bin", b"123"))], 422,
     "unexpected file field 'other' (files: image, depth, masks)"),
    ("two images", {"question": "Describe."}, [("image", ("b.png", png_bytes(RGB)))], 422, "give one 'image'"),
    ("mask file not an image", {"question": "Where is <mask>?"}, [("masks", ("m.png", b"nope"))], 422,
     "region 0 (masks file 0): not an image (PNG, JPEG, TIFF, ... expected)"),
    ("mask file wrong size", {"question": "Where is <mask>?"}, [("masks", ("m.png", png_bytes(MASK_50)))], 422,
     "region 0 (masks file 0): mask size 50x50 differs from the image size 90x160"),
    ("max_new_tokens text", {"question": "Describe.", "max_new_tokens": "ten"}, [], 422,
     "max_new_tokens: Input should be a valid integer, unable to parse string as an integer"),
]


@pytest.mark.parametrize("name,data,files,status,detail", MULTIPART_MALFORMED, ids=[m[0] for m in MULTIPART_MALFORMED])
def test_malformed_multipart_requests(client, name, data, files, status, detail):
    base = [("image", ("rgb.png", png_bytes(RGB))), ("depth", ("depth.png", png_bytes(DEPTH)))]
    r = client.post("/v1/ask", data=data, files=base + files)
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(detail)


def test_paths_in_requests_are_refused_and_never_opened(client, tmp_path, monkeypatch):
    """A client cannot make the server read its own files: path-like values are refused, and no image is
    opened by path while serving."""
    rgb_file, mask_file = tmp_path / "rgb.png", tmp_path / "mask.png"
    Image.fromarray(RGB).save(rgb_file)
    Image.fromarray(region_mask(0, 30, 0, 40)).save(mask_file)
    opened = []
    original_open = Image.open

    def spy(fp, *args, **kwargs):
        if not hasattr(fp, "read"):
            opened.append(fp)
        return original_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    hint = "the server never reads files or URLs named by a request: send the content itself"
    cases = [
        (body(image=str(rgb_file)), f"image: looks like a file path ({str(rgb_file)!r}); {hint}"),
        (body(depth="/etc/hostname"), f"depth: looks like a file path ('/etc/hostname'); {hint}"),
        (body(depth="file:///etc/passwd"), f"depth: looks like a file path ('file:///etc/passwd'); {hint}"),
        (body(image="rgb.png"), f"image: looks like a file path ('rgb.png'); {hint}"),
        (body(regions=[{"mask": str(mask_file)}, BOXES[1]]),
         f"region 0 (mask): looks like a file path ({str(mask_file)!r}); {hint}"),
        (body(image=None, image_path=str(rgb_file)), f"unknown field 'image_path' ({hint})"),
    ]
    for request_body, detail in cases:
        r = client.post("/v1/ask", json=request_body)
        assert (r.status_code, r.json()) == (422, {"detail": detail})
    r = client.post("/v1/ask", data={"question": "Describe.", "image": str(rgb_file)})  # multipart text field
    assert (r.status_code, r.json()) == (422, {"detail": f"image: looks like a file path ({str(rgb_file)!r}); {hint}"})
    r = client.post("/v1/frames", json={"image": str(rgb_file)})
    assert r.status_code == 422 and "looks like a file path" in r.json()["detail"]
    assert opened == []


# ------------------------------------------------------------------------------------- other routes
def test_health_docs_page_and_examples(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["queue_depth"] == 0 and health["uptime_s"] >= 0
    model = health["model"]
    assert model["name"] == "lively-tiny" and model["preset"] == "smolrgpt-tiny"
    assert model["vision"]["hidden_size"] == 64 and model["language"]["hidden_size"] == 128
    assert model["num_image_tokens"] == 64 and model["parameters"] > 1_000_000
    assert (model["precision"], model["weight_layout"]) == ("fp32", "row")  # an unconverted model: fp32, F.linear
    spec = client.get("/openapi.json").json()
    ask = spec["paths"]["/v1/ask"]["post"]
    assert set(ask["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"/v1/frames", "/health", "/v1/examples"} <= set(spec["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "<canvas id=\"canvas\"" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and "http://" not in r.text and "https://" not in r.text
    examples = client.get("/v1/examples").json()["examples"]
    assert len(examples) >= 1
    ex = examples[0]
    image = Image.open(__import__("io").BytesIO(client.get(ex["image_url"]).content))
    depth = Image.open(__import__("io").BytesIO(client.get(ex["depth_url"]).content))
    assert image.size == depth.size == (ex["width"], ex["height"]) and image.mode == "RGB" and depth.mode == "L"
    assert client.get("/v1/examples/nope/image.png").status_code == 404


ODD_VALUES = [None, 0, -1, 1.5, True, "", "x", "<mask>", [], {}, [[]], [None], {"a": 1}, [1, 2, 3, 4],
              {"size": [90, 160], "counts": None}, "data:;base64,", "A" * 8, 10**30]


def test_no_500_for_odd_values_anywhere(client):
    """Every field, and every part of a region, replaced by values of the wrong shape: always a 4xx or a 200."""
    statuses = set()
    fields = ["question", "image", "depth", "depth_polarity", "regions", "frame_id", "max_new_tokens", "id"]
    region_variants = ([{"box": v} for v in ODD_VALUES] + [{"rle": v} for v in ODD_VALUES]
                       + [{"polygon": v} for v in ODD_VALUES] + [{"mask": v} for v in ODD_VALUES]
                       + [{"rle": {"size": v, "counts": [14400]}} for v in ODD_VALUES]
                       + [{"rle": {"size": [90, 160], "counts": v}} for v in ODD_VALUES] + ODD_VALUES)
    requests = [body(**{f: v}) for f in fields for v in ODD_VALUES]
    requests += [body(question="Where is <mask>?", regions=[v]) for v in region_variants]
    for request_body in requests:
        r = client.post("/v1/ask", json=request_body)
        statuses.add(r.status_code)
        assert r.status_code == 200 or 400 <= r.status_code < 500, (request_body, r.text)
        assert isinstance(r.json()["detail" if r.status_code != 200 else "answer"], str)
    assert 422 in statuses


def test_a_bad_question_fails_alone_inside_a_batch(reference):
    """A prompt over the model's length limit is only found when tokenised, inside the worker: it gets its
    422 and the questions batched with it still get their own answers."""
    engine = load_engine()
    app = create_app(engine, max_batch=3, batch_wait_ms=3000)  # the batch closes as soon as the 3 are in
    long_question = "Describe " + "the pallet and the shelf " * 120 + "please."
    cases = [body(), body(question=long_question, regions=[]), body(question="Is <mask> left of <mask>?")]
    with BackgroundServer(app) as server, ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda b: HTTP.post(f"{server.url}/v1/ask", json=b, timeout=60), cases))
        health = HTTP.get(f"{server.url}/health").json()
    assert health["largest_batch"] == 3
    assert got(responses[0]) == expected(reference, Q2, [Region("box", b) for b in BOXES])
    assert got(responses[2]) == expected(reference, "Is <mask> left of <mask>?", [Region("box", b) for b in BOXES])
    assert responses[1].status_code == 422
    assert re.fullmatch(r"the prompt is \d+ tokens, longer than max_length=512", responses[1].json()["detail"])


def test_serve_command_binds_loopback_and_answers(tmp_path):
    """`smolrgpt serve` end to end in its own process: default host 127.0.0.1, /health and one answer."""
    from serving_support import free_port, lively_checkpoint

    from smolrgpt import cli

    args = cli.build_parser(only="serve").parse_args(["serve", "--model", "m"])
    assert (args.host, args.port, args.max_batch, args.batch_wait_ms, args.queue_size, args.max_request_mb) == \
        ("127.0.0.1", 8000, 8, 10.0, 64, 20.0)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "smolrgpt.cli", "serve", "--model", str(lively_checkpoint()),
                             "--port", str(port), "--max-new-tokens", "8", "--threads", "1", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                health = HTTP.get(f"http://127.0.0.1:{port}/health").json()
                break
            except httpx.TransportError:
                assert time.time() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health["model"]["name"] == "lively" and health["max_batch"] == 8
        r = HTTP.post(f"http://127.0.0.1:{port}/v1/ask", json=body(), timeout=60)
        assert got(r) == expected(load_engine(), Q2, [Region("box", b) for b in BOXES])
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}/" in out


@pytest.mark.parametrize("argv,message", [
    (["--max-batch", "0"], "--max-batch must be >= 1"),
    (["--port", "70000"], "--port must be 0..65535, got 70000"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_serve_command_rejects_bad_settings(capsys, argv, message):
    from smolrgpt import cli

    assert cli.main(["serve", "--model", "nowhere", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"smolrgpt serve: error: {message}"
