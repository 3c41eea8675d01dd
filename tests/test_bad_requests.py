"""The bad-input corpus of the HTTP service: each malformed request gets its 4xx and a `detail` naming what
is wrong; never a 5xx, never a dropped connection (the deepest JSON also against a real uvicorn server)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from smolrgpt.serving.api import MAX_JSON_DEPTH, create_app

from serving_support import BackgroundServer, b64, frame_arrays, http_client, load_engine, png_bytes

RGB, DEPTH = frame_arrays(0)
IMG, DEP = b64(RGB), b64(DEPTH)
Q1, Q2 = "How far is the pallet <mask>?", "How far is the pallet <mask> from the pallet <mask>?"
BOX = {"box": [0, 0, 40, 30]}
TRUNCATED = b64(png_bytes(RGB)[:300])
SMALL_MASK = b64(png_bytes(np.ones((10, 10), np.uint8) * 255))


def _tiff_f32() -> str:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((5, 5), np.float32)).save(buf, format="TIFF")
    return b64(buf.getvalue())


def nested(depth: int) -> str:
    return '{"question": "Q?", "image": "' + IMG + '", "regions": ' + "[" * depth + "]" * depth + "}"


def ask(**fields):
    return {"question": "What is here?", "image": IMG, **fields}


# name: (request body as JSON object, or raw text for "raw:", the status, a part of `detail`)
ASK_JSON = {
    "not_json": ("raw:{oops", 400, "the body is not valid JSON"),
    "nan_literal": ('raw:{"question": "Q?", "x": NaN}', 400, "NaN is not a JSON number"),
    "infinity_literal": ('raw:{"question": "Q?", "x": Infinity}', 400, "Infinity is not a JSON number"),
    "array_body": ("raw:[1, 2]", 422, "the JSON body must be an object, got list"),
    "string_body": ('raw:"hi"', 422, "must be an object, got str"),
    "null_body": ("raw:null", 422, "must be an object, got NoneType"),
    "empty_body": ("raw:", 400, "the body is not valid JSON"),
    "latin1_body": ("raw-bytes:" + '{"question": "caf\xe9"}', 400, "not valid JSON"),
    "nested_100000": (f"raw:{nested(100_000)}", 400, f"nested more than {MAX_JSON_DEPTH} levels deep"),
    "nested_1000": (f"raw:{nested(1000)}", 400, "nested more than"),
    "nested_40": (f"raw:{nested(40)}", 400, "nested more than"),
    "nested_objects": ("raw:" + '{"a":' * 5000 + "1" + "}" * 5000, 400, "nested more than"),
    "missing_question": ({"image": IMG}, 422, "missing field 'question'"),
    "question_null": (ask(question=None), 422, "question"),
    "question_number": (ask(question=3), 422, "question"),
    "empty_question": (ask(question=""), 422, "the question is empty"),
    "blank_question": (ask(question="  \n"), 422, "the question is empty"),
    "question_too_long": (ask(question="x" * 5000), 422, "the question is 5000 characters, more than 4000"),
    "unknown_field": (ask(colour="red"), 422, "unknown field 'colour'"),
    "image_path_field": (ask(image_path="/etc/passwd"), 422, "the server never reads files"),
    "image_is_a_path": (ask(image="/etc/passwd"), 422, "looks like a file path"),
    "image_is_a_relative_path": (ask(image="./rgb.png"), 422, "looks like a file path"),
    "image_is_a_url": (ask(image="file:///etc/passwd"), 422, "looks like a file path"),
    "image_not_base64": (ask(image="@@@@"), 422, "image: not valid base64"),
    "image_empty_base64": (ask(image=""), 422, "image: empty"),
    "image_number": (ask(image=5), 422, "image"),
    "image_not_an_image": (ask(image=b64(b"hello world")), 422, "image: not an image"),
    "image_truncated": (ask(image=TRUNCATED), 422, "image: cannot be decoded"),
    "image_data_url_not_base64": (ask(image="data:image/png,abc"), 422, "must be base64-encoded"),
    "no_image": ({"question": "Q?"}, 422, "missing field 'image'"),
    "depth_not_an_image": (ask(depth=b64(b"nope nope")), 422, "depth: not an image"),
    "depth_truncated": (ask(depth=TRUNCATED), 422, "depth: cannot be decoded"),
    "depth_polarity_unknown": (ask(depth=DEP, depth_polarity="up"), 422, "depth_polarity"),
    "regions_not_a_list": (ask(regions={"box": [0, 0, 1, 1]}), 422, "regions"),
    "tag_without_region": (ask(question=Q1, depth=DEP), 422, "1 <mask> tag(s) but 0 region(s)"),
    "region_without_tag": (ask(depth=DEP, regions=[BOX]), 422, "0 <mask> tag(s) but 1 region(s)"),
    "two_tags_one_region": (ask(question=Q2, depth=DEP, regions=[BOX]), 422, "2 <mask> tag(s) but 1 region(s)"),
    "regions_without_depth": (ask(question=Q1, regions=[BOX]), 422, "questions with regions need a depth map"),
    "too_many_regions": (ask(question="<mask>" * 65, depth=DEP, regions=[BOX] * 65), 422,
                         "65 regions, more than this server's limit of 64"),
    "box_three_numbers": (ask(question=Q1, depth=DEP, regions=[{"box": [1, 2, 3]}]), 422, "region 0 (box)"),
    "box_strings": (ask(question=Q1, depth=DEP, regions=[{"box": ["a", "b", "c", "d"]}]), 422, "region 0 (box)"),
    "box_booleans": (ask(question=Q1, depth=DEP, regions=[{"box": [True, 0, 5, 5]}]), 422, "region 0 (box)"),
    "box_inverted": (ask(question=Q1, depth=DEP, regions=[{"box": [40, 30, 0, 0]}]), 422, "region 0 (box)"),
    "box_outside": (ask(question=Q1, depth=DEP, regions=[{"box": [500, 500, 600, 600]}]), 422, "region 0 (box)"),
    "bare_list_wrong": (ask(question=Q1, depth=DEP, regions=[[1, 2]]), 422, "a list region must be a box"),
    "region_string": (ask(question=Q1, depth=DEP, regions=["box"]), 422, "a region must be an object"),
    "region_number": (ask(question=Q1, depth=DEP, regions=[7]), 422, "got int"),
    "region_null": (ask(question=Q1, depth=DEP, regions=[None]), 422, "got NoneType"),
    "region_two_keys": (ask(question=Q1, depth=DEP, regions=[{"box": [0, 0, 1, 1], "rle": {}}]), 422,
                        "exactly one key"),
    "region_empty_object": (ask(question=Q1, depth=DEP, regions=[{}]), 422, "exactly one key"),
    "region_unknown_kind": (ask(question=Q1, depth=DEP, regions=[{"circle": [1, 2, 3]}]), 422,
                            "unknown region kind 'circle'"),
    "region_path": (ask(question=Q1, depth=DEP, regions=[{"mask": "/tmp/mask.png"}]), 422, "looks like a file path"),
    "rle_size_wrong": (ask(question=Q1, depth=DEP, regions=[{"rle": {"size": [90], "counts": [1]}}]), 422,
                       "size must be [height, width]"),
    "rle_counts_floats": (ask(question=Q1, depth=DEP, regions=[{"rle": {"size": [90, 160], "counts": [1.5]}}]),
                          422, "counts must be"),
    "rle_counts_non_ascii": (ask(question=Q1, depth=DEP, regions=[{"rle": {"size": [90, 160], "counts": "é"}}]),
                             422, "ASCII"),
    "rle_extra_key": (ask(question=Q1, depth=DEP, regions=[{"rle": {"size": [90, 160], "counts": [1], "x": 1}}]),
                      422, "exactly 'size' and 'counts'"),
    "rle_wrong_size": (ask(question=Q1, depth=DEP, regions=[{"rle": {"size": [10, 10], "counts": [100]}}]), 422,
                       "region 0 (rle)"),
    "rle_corrupt_counts": (ask(question=Q1, depth=DEP, regions=[{"rle": {"size": [90, 160], "counts": "!!!!"}}]),
                           422, "region 0 (rle)"),
    "rle_counts_too_long": (ask(question=Q1, depth=DEP, regions=[{"rle": {"size": [90, 160], "counts": [20000]}}]),
                            422, "region 0 (rle)"),
    "polygon_two_points": (ask(question=Q1, depth=DEP, regions=[{"polygon": [[0, 0, 1, 1]]}]), 422,
                           "at least 3 points"),
    "polygon_odd": (ask(question=Q1, depth=DEP, regions=[{"polygon": [[0, 0, 1, 1, 2]]}]), 422, "region 0 (polygon)"),
    "polygon_huge_coordinates": (ask(question=Q1, depth=DEP, regions=[{"polygon": [[0, 0, 1e9, 0, 0, 1e9]]}]), 422,
                                 "polygon coordinates must be finite numbers between -320 and 320"),
    "polygon_1e308": (ask(question=Q1, depth=DEP, regions=[{"polygon": [[0, 0, 1e308, 0, 0, 1e308]]}]), 422,
                      "between -320 and 320"),
    "mask_all_zero": (ask(question=Q1, depth=DEP, regions=[{"mask": b64(np.zeros((90, 160), np.uint8))}]), 422,
                      "the region is empty"),
    "box_zero_area": (ask(question=Q1, depth=DEP, regions=[{"box": [5, 5, 5, 5]}]), 422, "is empty inside"),
    "rle_huge_size": (ask(question=Q1, depth=DEP, regions=[{"rle": {"size": [100000, 100000], "counts": "abc"}}]),
                      422, "mask size 100000x100000 differs"),
    "polygon_empty": (ask(question=Q1, depth=DEP, regions=[{"polygon": []}]), 422, "region 0 (polygon)"),
    "mask_wrong_size": (ask(question=Q1, depth=DEP, regions=[{"mask": SMALL_MASK}]), 422,
                        "mask size 10x10 differs from the image size 90x160"),
    "mask_not_an_image": (ask(question=Q1, depth=DEP, regions=[{"mask": b64(b"xyzxyz")}]), 422,
                          "region 0 (mask): not an image"),
    "mask_file_in_json": (ask(question=Q1, depth=DEP, regions=[{"mask_file": 0}]), 422,
                          "only multipart requests have them"),
    "max_new_tokens_zero": (ask(max_new_tokens=0), 422, "max_new_tokens"),
    "max_new_tokens_negative": (ask(max_new_tokens=-1), 422, "max_new_tokens"),
    "max_new_tokens_huge": (ask(max_new_tokens=100_000_000), 422, "max_new_tokens must be at most 512"),
    "max_new_tokens_text": (ask(max_new_tokens="many"), 422, "max_new_tokens"),
    "max_new_tokens_boolean": (ask(max_new_tokens=True), 422,
                               "max_new_tokens: Input should be a valid integer, not a boolean"),
    "id_too_long": (ask(id="x" * 300), 422, "id"),
    "unknown_frame_id": ({"question": "Q?", "frame_id": "f-nope"}, 404, "unknown frame_id 'f-nope'"),
    "frame_id_and_image": ({"question": "Q?", "frame_id": "f-nope", "image": IMG}, 422,
                           "either frame_id or image/depth"),
    "frame_id_and_polarity": ({"question": "Q?", "frame_id": "f-nope", "depth_polarity": "near_bright"}, 422,
                              "depth_polarity belongs to the frame"),
    "depth_float_tiff_tiny_mismatch": (ask(question=Q1, depth=_tiff_f32(), regions=[BOX]), 422, "depth"),
}


@pytest.fixture(scope="module")
def app():
    return create_app(load_engine(max_new_tokens=4), max_batch=4, batch_wait_ms=5, queue_size=16,
                      max_request_bytes=2_000_000, max_image_pixels=200_000, frame_cache=2, model_name="corpus")


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _send(client, path, body):
    if isinstance(body, str) and body.startswith("raw-bytes:"):
        return client.post(path, content=body[len("raw-bytes:"):].encode("latin-1"),
                           headers={"content-type": "application/json"})
    if isinstance(body, str) and body.startswith("raw:"):
        return client.post(path, content=body[4:].encode(), headers={"content-type": "application/json"})
    return client.post(path, json=body)


def _assert_refused(r, status, needle):
    assert r.status_code == status, (r.status_code, r.text[:500])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and needle in detail, detail


@pytest.mark.parametrize("case", sorted(ASK_JSON))
def test_ask_json_refused(client, case):
    body, status, needle = ASK_JSON[case]
    _assert_refused(_send(client, "/v1/ask", body), status, needle)


FRAME_JSON = {k: ASK_JSON[k] for k in ("not_json", "nan_literal", "array_body", "empty_body", "nested_100000",
                                       "nested_objects", "image_is_a_path", "image_not_base64", "image_not_an_image",
                                       "image_truncated", "depth_not_an_image", "depth_truncated",
                                       "depth_polarity_unknown", "latin1_body")}
FRAME_JSON.update({
    "question_in_a_frame": ({"image": IMG, "question": "Q?"}, 422, "unknown field 'question'"),
    "no_image": ({"depth": DEP}, 422, "missing field 'image'"),
    "regions_in_a_frame": ({"image": IMG, "regions": []}, 422, "unknown field 'regions'"),
})


@pytest.mark.parametrize("case", sorted(FRAME_JSON))
def test_frame_upload_json_refused(client, case):
    body, status, needle = FRAME_JSON[case]
    if isinstance(body, dict) and case in ("image_is_a_path", "image_not_base64", "image_not_an_image",
                                           "image_truncated", "depth_not_an_image", "depth_truncated",
                                           "depth_polarity_unknown"):
        body = {k: v for k, v in body.items() if k != "question"}
    _assert_refused(_send(client, "/v1/frames", body), status, needle)


PNG = png_bytes(RGB)
MULTIPART = {
    "unknown_file_field": ({"question": "Q?"}, [("image", PNG), ("photo", PNG)], 422, "unexpected file field 'photo'"),
    "two_images": ({"question": "Q?"}, [("image", PNG), ("image", PNG)], 422, "give one 'image'"),
    "regions_not_json": ({"question": Q1, "regions": "[{"}, [("image", PNG), ("depth", png_bytes(DEPTH))], 422,
                         "regions: not valid JSON"),
    "regions_nested_deep": ({"question": Q1, "regions": "[" * 5000 + "]" * 5000}, [("image", PNG)], 400,
                            "regions is nested more than"),
    "mask_index_out_of_range": ({"question": Q1, "regions": '[{"mask_file": 3}]'},
                                [("image", PNG), ("depth", png_bytes(DEPTH)), ("masks", png_bytes(DEPTH))], 422,
                                "mask_file must be an index of the 1 uploaded"),
    "unreferenced_mask": ({"question": Q1, "regions": '[{"box": [0, 0, 5, 5]}]'},
                          [("image", PNG), ("depth", png_bytes(DEPTH)), ("masks", png_bytes(DEPTH))], 422,
                          "are not referenced by any region"),
    "question_twice": ([("question", "a"), ("question", "b")], [("image", PNG)], 422, "field 'question' is given twice"),
    "image_not_an_image": ({"question": "Q?"}, [("image", b"nope")], 422, "image: not an image"),
    "image_truncated": ({"question": "Q?"}, [("image", PNG[:300])], 422, "image: cannot be decoded"),
    "no_question": ({}, [("image", PNG)], 422, "missing field 'question'"),
    "empty_question": ({"question": ""}, [("image", PNG)], 422, "the question is empty"),
    "max_new_tokens_text": ({"question": "Q?", "max_new_tokens": "lots"}, [("image", PNG)], 422, "max_new_tokens"),
}


@pytest.mark.parametrize("case", sorted(MULTIPART))
def test_ask_multipart_refused(client, case):
    fields, files, status, needle = MULTIPART[case]
    data = fields if isinstance(fields, dict) else None
    if data is None:  # repeated fields: encode by hand
        import httpx

        req = httpx.Request("POST", "http://x/v1/ask", data=None, files=[(k, (None, v)) for k, v in fields] +
                            [(k, (k, v, "image/png")) for k, v in files])
        r = client.post("/v1/ask", content=req.read(), headers={"content-type": req.headers["content-type"]})
    else:
        r = client.post("/v1/ask", data=data, files=[(k, (k, v, "image/png")) for k, v in files])
    _assert_refused(r, status, needle)


OTHER = {
    "wrong_content_type": ("POST", "/v1/ask", {"content": b"q=1", "headers": {"content-type": "text/plain"}}, 415,
                           "unsupported content type 'text/plain'"),
    "no_content_type": ("POST", "/v1/ask", {"content": b"{}", "headers": {"content-type": ""}}, 415,
                        "unsupported content type"),
    "body_too_large": ("POST", "/v1/ask", {"content": b"x" * 2_100_000, "headers": {"content-type": "application/json"}},
                       413, "over this server's limit"),
    "bad_content_length": ("POST", "/v1/ask", {"content": b"{}", "headers": {"content-type": "application/json",
                                                                           "content-length": "abc"}}, 400,
                           "invalid Content-Length header"),
    "image_too_many_pixels": ("POST", "/v1/ask", {"json": ask(image=b64(np.zeros((500, 500, 3), np.uint8)))}, 413,
                              "more than this server's limit of 200,000"),
    "delete_unknown_frame": ("DELETE", "/v1/frames/f-nope", {}, 404, "unknown frame_id 'f-nope'"),
    "unknown_example": ("GET", "/v1/examples/nope/image.png", {}, 404, "no example file nope/image.png"),
    "unknown_example_file": ("GET", "/v1/examples/warehouse-0/other.png", {}, 404, "no example file"),
}


@pytest.mark.parametrize("case", sorted(OTHER))
def test_other_requests_refused(client, case):
    method, path, kwargs, status, needle = OTHER[case]
    _assert_refused(client.request(method, path, **kwargs), status, needle)


def test_the_deepest_json_on_a_real_server_keeps_the_connection(app):
    """100,000 levels over a real socket: a 400 with its detail, and the same connection answers again."""
    client = http_client()
    with BackgroundServer(app) as server:
        r = client.post(server.url + "/v1/ask", content=nested(100_000).encode(),
                        headers={"content-type": "application/json"})
        _assert_refused(r, 400, "nested more than")
        assert client.get(server.url + "/health").json()["status"] == "ok"


def test_a_request_within_the_depth_limit_is_answered(client):
    """The depth bound does not refuse real requests (polygons are the deepest: 4 levels)."""
    r = client.post("/v1/ask", json=ask(question=Q1, depth=DEP, regions=[{"polygon": [[0, 0, 40, 0, 40, 30]]}]))
    assert r.status_code == 200, r.text
    assert json.loads(r.text)["answer"] is not None
