"""`smolrgpt data check`: a corpus of bad inputs gives the expected problem lines and exit codes."""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from smolrgpt.cli import main
from smolrgpt.processing.check import check_dataset
from smolrgpt.data.track3 import answer_problem

H, W = 12, 20
TRAIN_SAMPLE = Path(os.environ.get("SMOLRGPT_TRACK3_SAMPLE",
                                   Path(__file__).resolve().parents[2] / "shared" / "data" / "track3" / "train_sample.json"))
LINE = re.compile(r"^(?P<file>.+): record (?P<index>\d+)(?: \(id (?P<id>[^)]*)\))?: (?P<level>error|warning) "
                  r"(?P<kind>\w+): (?P<message>.*)$")


def rle_of(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def block(y1: int, y2: int, x1: int, x2: int, h: int = H, w: int = W) -> dict:
    mask = np.zeros((h, w), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return rle_of(mask)


def record(rid: str, image: str = "000001.png", masks: int = 2, question: str | None = None, **fields) -> dict:
    rle = fields.pop("rle", [block(0, 4, 2 * k, 2 * k + 2) for k in range(masks)])
    question = question if question is not None else "Distance " + " and ".join(["<mask>"] * len(rle)) + "?"
    out = {"id": rid, "image": image,
           "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "It is 1.5 meters."}],
           "rle": rle, "category": "distance", "normalized_answer": 1.5, "freeform_answer": "It is 1.5 meters."}
    out.update(fields)
    return out


def track3_split(root: Path, records: list[dict], split: str = "val", frames=("000001",)) -> Path:
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "depths").mkdir(parents=True, exist_ok=True)
    for stem in frames:
        Image.new("RGB", (W, H), (10, 20, 30)).save(root / split / "images" / f"{stem}.png")
        Image.new("L", (W, H), 128).save(root / split / "depths" / f"{stem}_depth.png")
    path = root / f"{split}.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def run_check(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main(["data", "check", *map(str, argv), "--no-progress"])
    out = capsys.readouterr().out
    problems = [m.groupdict() for m in map(LINE.match, out.splitlines()) if m]
    return code, problems, out


def test_clean_track3_split_passes(tmp_path, capsys):
    path = track3_split(tmp_path, [record("a"), record("b", masks=3), record(
        "c", category="left_right", normalized_answer="right"), record("d", category="mcq", normalized_answer="1"),
        record("e", category="count", normalized_answer=0)])
    code, problems, out = run_check(capsys, path)
    assert (code, problems) == (0, [])
    assert "records checked                5" in out and "result: OK (0 errors, 0 warnings)" in out
    assert "not checked" not in out  # the real layout exists, so images and depths were checked


def test_real_train_sample_passes_without_images(capsys):
    if not TRAIN_SAMPLE.exists():
        pytest.skip(f"{TRAIN_SAMPLE} not found (set SMOLRGPT_TRACK3_SAMPLE)")
    code, problems, out = run_check(capsys, TRAIN_SAMPLE)
    assert (code, problems) == (0, [])
    assert "records checked              100" in out
    assert "image files not checked" in out and "result: OK" in out


def bad_corpus(root: Path) -> tuple[Path, set[tuple[int, str]]]:
    records = [
        record("ok"),                                                       # 0
        record("no-image", image="999999.png"),                             # 1
        record("wrong-size", rle=[block(0, 4, 0, 4), block(0, 2, 0, 2, h=24, w=40)]),  # 2
        record("corrupt", rle=[block(0, 4, 0, 4), {"size": [H, W], "counts": "}}}}not-an-rle"}]),  # 3
        record("sixteen-bit", image="000002.png"),                          # 4
        record("tags", question="Distance <mask> and <mask> and <mask>?"),  # 5
        record("category", category="height"),                             # 6
        record("type", normalized_answer="far"),                            # 7
        record("ok"),                                                       # 8: duplicate of 0
        record("count", category="count", normalized_answer=-1),            # 9
        record("mcq", category="mcq", normalized_answer="5"),               # 10
        record("lr", category="left_right", normalized_answer="yes"),       # 11
        record("empty", rle=[block(0, 4, 0, 4), block(0, 0, 0, 0)]),        # 12
        {"id": "no-conversations", "image": "000001.png", "rle": []},       # 13
        record("no-depth", image="000003.png"),                             # 14
        record("float-count", category="count", normalized_answer=2.5),    # 15
    ]
    path = track3_split(root, records, frames=("000001", "000002", "000003"))
    depth16 = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 200)
    Image.fromarray(depth16).save(root / "val" / "depths" / "000002_depth.png")
    assert Image.open(root / "val" / "depths" / "000002_depth.png").mode == "I;16"
    (root / "val" / "depths" / "000003_depth.png").unlink()
    expected = {(1, "missing_image"), (1, "missing_depth"), (2, "mask_size"), (3, "undecodable_region"), (4, "depth_mode"),
                (5, "tag_mask_mismatch"), (6, "unknown_category"), (7, "bad_answer"), (8, "duplicate_id"),
                (9, "bad_answer"), (10, "bad_answer"), (11, "bad_answer"), (12, "empty_mask"), (13, "bad_record"),
                (14, "missing_depth"), (15, "bad_answer")}
    return path, expected


def test_bad_corpus_reports_every_problem_record_by_record(tmp_path, capsys):
    path, expected = bad_corpus(tmp_path)
    code, problems, out = run_check(capsys, path)
    assert code == 1
    assert {(int(p["index"]), p["kind"]) for p in problems} == expected
    assert len(problems) == len(expected) and all(p["file"] == str(path) for p in problems)
    by_index = {int(p["index"]): p for p in problems if p["kind"] != "missing_depth" or p["index"] != "1"}
    assert by_index[1]["message"] == f"{tmp_path / 'val' / 'images' / '999999.png'} does not exist"
    assert by_index[2]["message"] == "mask 1 is 24x40 but the image is 12x20"
    assert by_index[3]["message"].startswith("mask 1 (rle): undecodable RLE")
    assert by_index[4]["level"] == "warning" and "'I;16'" in by_index[4]["message"]
    assert by_index[5]["message"] == "3 <mask> tags but 2 masks"
    assert by_index[6]["message"] == "'height' is not one of left_right, count, distance, mcq"
    assert by_index[7]["message"] == "distance must be a number of metres, got 'far'"
    assert (by_index[8]["id"], by_index[8]["message"]) == ("ok", "id 'ok' appears more than once")
    assert by_index[9]["message"] == "count must be non-negative, got -1"
    assert by_index[10]["message"] == "mcq region index 5 is not one of the 2 masks"
    assert by_index[11]["message"] == "left_right must be 'left' or 'right', got 'yes'"
    assert by_index[12]["message"] == "mask 1 (rle): has no pixel inside"
    assert "'conversations' must be a non-empty list" in by_index[13]["message"]
    assert by_index[15]["message"] == "count must be an integer, got 2.5"
    summary = out[out.index("summary of"):]
    assert re.search(r"bad_answer\s+5\s+error", summary) and re.search(r"depth_mode\s+1\s+warning", summary)
    assert "result: FAILED (15 errors, 1 warnings)" in summary


def test_json_report_and_max_errors(tmp_path, capsys):
    path, expected = bad_corpus(tmp_path)
    code = main(["data", "check", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False and report["records"] == 16
    assert {(p["index"], p["kind"]) for p in report["problems"]} == expected
    assert report["counts"]["bad_answer"] == 5 and report["warnings"] == 1
    code, problems, out = run_check(capsys, path, "--max-errors", "2")
    assert code == 1 and len(problems) == 2 and "stopped early: --max-errors 2 reached at record 1" in out


def test_sixteen_bit_depth_is_a_warning_unless_strict(tmp_path, capsys):
    path = track3_split(tmp_path, [record("a")])
    Image.fromarray(np.full((H, W), 4000, np.uint16)).save(tmp_path / "val" / "depths" / "000001_depth.png")
    code, problems, out = run_check(capsys, path)
    assert code == 0 and [p["kind"] for p in problems] == ["depth_mode"] and "result: OK (0 errors, 1 warnings)" in out
    code, _, out = run_check(capsys, path, "--strict")
    assert code == 1 and "result: FAILED" in out


def test_truncated_json_gives_position_and_fails(tmp_path, capsys):
    path = track3_split(tmp_path, [record("a"), record("b"), record("c")])
    text = path.read_text()
    path.write_text(text[: text.index('"c"') + 40])
    code, problems, out = run_check(capsys, path)
    assert code == 1
    (problem,) = problems
    assert (problem["index"], problem["kind"]) == ("2", "malformed_json")
    assert re.search(r"file ends inside record 2 \(.*\) at line \d+ column \d+ \(char \d+\)", problem["message"])
    assert "records checked                2" in out and "cannot be read past record 2" in out


def test_images_root_and_missing_folders_are_reported(tmp_path, capsys):
    path = tmp_path / "data" / "val.json"
    path.parent.mkdir()
    path.write_text(json.dumps([record("a")]))
    code, problems, out = run_check(capsys, path)
    assert code == 0 and "image files not checked" in out and "depth files not checked" in out
    track3_split(tmp_path / "elsewhere", [], split="val")
    code, problems, out = run_check(capsys, path, "--images-root", tmp_path / "elsewhere" / "val" / "images")
    assert (code, problems) == (0, []) and "not checked" not in out
    code, problems, _ = run_check(capsys, path, "--images-root", tmp_path)
    assert code == 1 and [p["kind"] for p in problems] == ["missing_image"]


def test_other_formats_are_checked_too(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "images").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "images" / "f1.jpg")
    osd = tmp_path / "osd.json"
    osd.write_text(json.dumps([
        {"filename": "f1", "conversations": [{"from": "human", "value": "Is <mask> <depth> left of <mask> <depth>?"},
                                             {"from": "gpt", "value": "Yes."}],
         "bbox": [[0, 0, 5, 5], [30, 30, 40, 40]]},
        {"filename": "f2", "conversations": [{"from": "human", "value": "Is <mask> <depth> big?"}],
         "bbox": [[0, 0, 5, 5]]}]))
    code, problems, _ = run_check(capsys, osd, "--images-root", tmp_path / "images")
    assert code == 1 and {(p["index"], p["kind"]) for p in problems} == {("0", "empty_mask"), ("1", "missing_image")}

    llava = tmp_path / "chat.json"
    llava.write_text(json.dumps([{"id": "x", "image": "f1.jpg", "conversations": [
        {"from": "human", "value": "<image>\nCaption?"}, {"from": "gpt", "value": "c"}]},
        {"id": "y", "image": "gone.jpg", "conversations": [{"from": "human", "value": "?"}]}]))
    code, problems, _ = run_check(capsys, llava)
    assert code == 1 and [(p["index"], p["kind"]) for p in problems] == [("1", "missing_image")]

    buf = io.BytesIO()
    Image.new("RGB", (W, H)).save(buf, format="PNG")
    row = {"id": "p0", "rgb_image": buf.getvalue(), "depth_image": buf.getvalue(),
           "rle": [block(0, 3, 0, 3, h=H + 1, w=W)], "texts": {"user": "<mask> left?", "assistant": "left"},
           "category": "left_right", "normalized_answer": "left", "dataset_name": "warehouse-rgbd-smolRGPT"}
    pq.write_table(pa.Table.from_pylist([row, dict(row, id="p1", normalized_answer="up")]), tmp_path / "w.parquet")
    code, problems, _ = run_check(capsys, tmp_path / "w.parquet")
    assert code == 1
    assert {(p["index"], p["kind"]) for p in problems} == {("0", "mask_size"), ("1", "mask_size"), ("1", "bad_answer")}


def test_answer_rules():
    assert answer_problem("distance", "6.36", 2) is None and answer_problem("distance", 0, 2) is None
    assert answer_problem("distance", -0.5, 2) and answer_problem("distance", True, 2)
    assert answer_problem("distance", float("nan"), 2) and answer_problem("distance", None, 2)
    assert answer_problem("count", 3, 11) is None and answer_problem("count", "4", 11) is None
    assert answer_problem("count", 2.0, 11) is None and answer_problem("count", "two", 11)
    assert answer_problem("left_right", "Left", 2) and answer_problem("left_right", "left", 2) is None
    assert answer_problem("mcq", "12", 13) is None and answer_problem("mcq", 13, 13) and answer_problem("mcq", "a", 3)


def test_library_entry_point_counts_problems(tmp_path):
    path, expected = bad_corpus(tmp_path)
    report = check_dataset(path, progress=False)
    assert report.records == 16 and report.errors == len(expected) - 1 and report.warnings == 1
    assert not report.ok() and report.counts()["bad_answer"] == 5
    assert check_dataset(path, progress=False, jobs=2).problems == report.problems  # workers keep file order
