"""`smolrgpt synth`: real Track 3 layout and schema, exact masks, invertible depth, answers that an
independent re-derivation from the scene metadata agrees with, determinism, resumability, CLI errors."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from smolrgpt.cli import main
from smolrgpt.synth.dataset import SynthConfig, generate_dataset
from smolrgpt.synth.questions import MIN_VISIBLE_FRACTION

# The real 100-record sample lives in the shared folder beside the checkout; SMOLRGPT_TRACK3_SAMPLE overrides.
REAL_SAMPLE = Path(os.environ.get("SMOLRGPT_TRACK3_SAMPLE",
                                  Path(__file__).resolve().parents[2] / "shared" / "data" / "track3" / "train_sample.json"))
SIZE = (320, 180)
CATEGORIES = ("left_right", "count", "distance", "mcq")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")


def _synth(out: Path, *extra: str) -> int:
    return main(["synth", "--out", str(out), "--size", f"{SIZE[0]}x{SIZE[1]}", "--quiet", *extra])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    assert _synth(out, "--splits", "train=40,val=4,test=4", "--seed", "3", "--instance-maps") == 0
    return out


def _load(path: Path):
    return json.loads(path.read_text())


def _scenes(root: Path, split: str) -> dict[str, dict]:
    return {p.stem: _load(p) for p in sorted((root / split / "scenes").glob("*.json"))}


def _questions(root: Path, split: str):
    """(scene, question entry) for every question of a split, keyed by record id."""
    out = {}
    for scene in _scenes(root, split).values():
        for q in scene["questions"]:
            out[q["id"]] = (scene, q)
    return out


# ----------------------------------------------------------------------------- independent answer check
def _u(scene: dict, point) -> float:
    cam = scene["camera"]
    p = np.array(cam["world_to_camera"]) @ (np.asarray(point) - np.array(cam["position"]))
    return cam["fx"] * p[0] / p[2] + cam["cx"]


def _inside(obj: dict, buf: dict) -> bool:
    dx, dy = obj["center"][0] - buf["center"][0], obj["center"][1] - buf["center"][1]
    c, s = np.cos(buf["yaw"]), np.sin(buf["yaw"])
    return abs(c * dx + s * dy) <= buf["size"][0] / 2 and abs(-s * dx + c * dy) <= buf["size"][1] / 2


def _distance(a: dict, b: dict) -> float:
    if b["class"] == "buffer" and a["class"] != "buffer" and _inside(a, b):
        return 0.0
    return round(float(np.linalg.norm(np.subtract(a["center"], b["center"]))), 2)


def _extreme(scene: dict, objs: list[dict], which: str) -> dict:
    order = sorted(objs, key=lambda o: _u(scene, o["center"]))
    return {"leftmost": order[0], "rightmost": order[-1], "middle": order[len(order) // 2]}[which]


def _closest(objs: list[dict], to: dict) -> dict:
    return min(objs, key=lambda o: np.linalg.norm(np.subtract(o["center"], to["center"])))


def _classes(objs) -> set[str]:
    return {o["class"] for o in objs}


def expected_answer(scene: dict, q: dict):
    """Re-derive an answer from the scene file alone, following its stated conventions."""
    objects = {o["instance_id"]: o for o in scene["objects"]}
    r = [objects[i] for i in q["regions"]]
    p = q["params"]
    family = q["family"]
    if family == "lr_pair":
        return "left" if _u(scene, r[0]["center"]) < _u(scene, r[1]["center"]) else "right"
    if family == "count_buffer":
        nb, npal = p["n_buffers"], p["n_pallets"]
        buffers, pallets, shelves = r[:nb], r[nb:nb + npal], r[nb + npal:]
        assert _classes(buffers) == {"buffer"} and _classes(pallets) == {"pallet"} and len(shelves) == p["n_shelves"]
        if p["select"] in ("leftmost", "rightmost", "middle"):
            chosen = _extreme(scene, buffers, p["select"])
        else:
            anchor = shelves[0] if p["select"] == "closest_to_shelf" else _extreme(scene, shelves, p["side"] + "most")
            assert anchor["class"] == "shelf"
            chosen = _closest(buffers, anchor)
        in_scene = [o for o in scene["objects"] if o["class"] == "pallet" and _inside(o, chosen)]
        assert all(o in pallets for o in in_scene), "every pallet of the chosen buffer must be listed"
        return len(in_scene)
    if family in ("dist_pair", "dist_to_buffer"):
        return _distance(r[0], r[1])
    if family == "dist_extreme_pallet_buffer":
        buffers, pallets = r[:p["n_buffers"]], r[p["n_buffers"]:]
        assert _classes(buffers) == {"buffer"} and _classes(pallets) == {"pallet"}
        return _distance(_extreme(scene, pallets, p["pallet"]), _extreme(scene, buffers, p["buffer"]))
    if family == "dist_extreme_pallets":
        assert _classes(r) == {"pallet"}
        return _distance(_extreme(scene, r, "leftmost"), _extreme(scene, r, "rightmost"))
    if family == "dist_transporter_buffer":
        assert r[0]["class"] == "transporter" and _classes(r[1:]) == {"buffer"}
        return _distance(r[0], _extreme(scene, r[1:], p["buffer"]))
    if family == "mcq_extreme":
        assert len(_classes(r)) == 1
        return str(r.index(_extreme(scene, r, p["select"])))
    if family == "mcq_buffer_shelf":
        assert _classes(r[:-1]) == {"buffer"} and r[-1]["class"] == "shelf"
        return str(r.index(_closest(r[:-1], r[-1])))
    if family == "mcq_pickup":
        nt = p["n_transporters"]
        if p["layout"] == "transporters_first":
            transporters, pallets = r[:nt], r[nt:]
        else:
            transporters, pallets = r[-1:], r[:-1]
        assert _classes(transporters) == {"transporter"} and _classes(pallets) == {"pallet"}
        empty = [t for t in transporters if not t["carrying"]]
        assert len(empty) == 1, "exactly one listed transporter is empty"
        return str(r.index(_closest(pallets, empty[0])))
    raise AssertionError(f"unknown family {family}")


# ------------------------------------------------------------------------------------------------- tests
def test_layout_and_schema_match_the_real_files(dataset):
    real = _load(REAL_SAMPLE)
    real_keys = list(real[0].keys())
    real_types = {r["category"]: type(r["normalized_answer"]) for r in real}
    for split in ("train", "val"):
        records = _load(dataset / f"{split}.json")
        assert isinstance(records, list) and records
        for rec in records:
            assert list(rec.keys()) == real_keys
            assert re.fullmatch(r"[0-9a-f]{32}", rec["id"])
            assert re.fullmatch(r"\d{6}\.png", rec["image"])
            human, gpt = rec["conversations"]
            assert (human["from"], gpt["from"]) == ("human", "gpt") and set(human) == {"from", "value"}
            assert gpt["value"] == rec["freeform_answer"]
            assert rec["category"] in CATEGORIES
            assert type(rec["normalized_answer"]) is real_types[rec["category"]]
            assert human["value"].count("<mask>") == len(rec["rle"])
            assert all(set(m) == {"size", "counts"} and isinstance(m["counts"], str)
                       and m["size"] == [SIZE[1], SIZE[0]] for m in rec["rle"])
            assert (dataset / split / "images" / rec["image"]).exists()
            assert (dataset / split / "depths" / rec["image"].replace(".png", "_depth.png")).exists()
            refs = [int(k) for k in re.findall(r"\[Region (\d+)\]", gpt["value"])]
            assert refs and max(refs) < len(rec["rle"])
    img = Image.open(dataset / "train" / "images" / "000000.png")
    depth = Image.open(dataset / "train" / "depths" / "000000_depth.png")
    assert (img.mode, img.size, depth.mode, depth.size) == ("RGB", SIZE, "L", SIZE)
    ids = [r["id"] for s in ("train", "val") for r in _load(dataset / f"{s}.json")] + [
        r["id"] for r in _load(dataset / "test.json")]
    assert len(ids) == len(set(ids))


def test_the_project_reader_loads_every_split(dataset):
    from smolrgpt.data.track3 import iter_track3

    for split in ("train", "val", "test"):
        samples = list(iter_track3(dataset / f"{split}.json", validate=True))
        assert samples and all(Path(s.image).exists() and Path(s.depth).exists() for s in samples)
        assert all(s.num_mask_tags() == len(s.regions) for s in samples)


def test_test_split_hides_answers_and_test_answers_match(dataset):
    test = _load(dataset / "test.json")
    answers = _load(dataset / "test_answers.json")
    assert test and [t["id"] for t in test] == [a["id"] for a in answers]
    questions = _questions(dataset, "test")
    for rec, ans in zip(test, answers):
        assert list(rec.keys()) == ["id", "image", "conversations", "rle"]
        assert [c["from"] for c in rec["conversations"]] == ["human"]
        assert list(ans.keys()) == ["id", "category", "normalized_answer"]
        _, q = questions[rec["id"]]
        assert (ans["category"], ans["normalized_answer"]) == (q["category"], q["normalized_answer"])


def test_masks_are_the_visible_instance_pixels(dataset):
    min_px = MIN_VISIBLE_FRACTION * SIZE[0] * SIZE[1]
    for split in ("train", "val", "test"):
        records = {r["id"]: r for r in _load(dataset / f"{split}.json")}
        for qid, (scene, q) in _questions(dataset, split).items():
            instances = np.array(Image.open(dataset / split / "instances" / scene["image"]))
            rec = records[qid]
            assert len(rec["rle"]) == len(q["regions"])
            for rle, inst in zip(rec["rle"], q["regions"]):
                decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                assert np.array_equal(decoded.astype(bool), instances == inst)
                assert decoded.sum() >= min_px
        for scene in _scenes(dataset, split).values():
            instances = np.array(Image.open(dataset / split / "instances" / scene["image"]))
            counts = np.bincount(instances.ravel(), minlength=len(scene["objects"]) + 1)
            for obj in scene["objects"]:  # an object covers at least what is seen of it
                assert obj["visible_pixels"] == counts[obj["instance_id"]] <= obj["silhouette_pixels"]


def test_depth_png_converts_back_to_metric_depth(dataset):
    """Floor pixels have an analytic depth from the camera alone: compare it with the decoded PNG."""
    for scene in list(_scenes(dataset, "train").values())[:6]:
        scale = scene["depth_png"]
        value = np.array(Image.open(dataset / "train" / "depths" / scene["depth"])).astype(np.float64)
        metres = scale["near_m"] + value / 255 * (scale["far_m"] - scale["near_m"])
        instances = np.array(Image.open(dataset / "train" / "instances" / scene["image"]))
        buffers = [o["instance_id"] for o in scene["objects"] if o["class"] == "buffer"]
        v, u = np.nonzero(np.isin(instances, buffers))  # painted floor, z = 0
        cam = scene["camera"]
        rays = np.stack([(u + 0.5 - cam["cx"]) / cam["fx"], (v + 0.5 - cam["cy"]) / cam["fy"], np.ones(u.size)])
        world_z = np.array(cam["world_to_camera"]).T[2] @ rays
        truth = -cam["position"][2] / world_z  # z-depth, since the camera-z of each ray is 1
        assert u.size > 100
        assert np.abs(metres[v, u] - truth).max() <= (scale["far_m"] - scale["near_m"]) / 510 + 1e-3
        assert metres.max() <= scale["far_m"] + 1e-9 and metres.min() >= scale["near_m"] - 1e-9


def test_every_answer_is_recomputed_from_the_scene(dataset):
    checked = 0
    for split in ("train", "val", "test"):
        for qid, (scene, q) in _questions(dataset, split).items():
            expected = expected_answer(scene, q)
            if q["category"] == "distance":
                assert abs(q["normalized_answer"] - expected) <= 0.0100001, (qid, q)
            else:
                assert q["normalized_answer"] == expected, (qid, q)
            checked += 1
    for rec in _load(dataset / "train.json"):
        scene, q = _questions(dataset, "train")[rec["id"]]
        assert rec["normalized_answer"] == q["normalized_answer"]
        text, ans = rec["freeform_answer"], rec["normalized_answer"]
        if rec["category"] == "distance":
            assert (str(ans) in text) or (ans == 0 and " 0 meters" in text)
        elif rec["category"] == "count":
            assert NUMBER_WORDS[ans] in text
        elif rec["category"] == "mcq":
            assert f"[Region {ans}]" in text
        else:
            assert ans in text
    assert checked >= 150


def test_category_mix_and_mask_counts_are_close_to_the_real_data(dataset):
    records = _load(dataset / "train.json")
    share = {c: sum(r["category"] == c for r in records) / len(records) for c in CATEGORIES}
    target = {"left_right": 0.139, "count": 0.148, "distance": 0.493, "mcq": 0.221}
    for c in CATEGORIES:
        assert abs(share[c] - target[c]) < 0.08, share
    masks = {c: [len(r["rle"]) for r in records if r["category"] == c] for c in CATEGORIES}
    assert set(masks["left_right"]) == {2}
    assert min(masks["count"]) >= 4 and max(masks["count"]) <= 15 and 8 <= np.mean(masks["count"]) <= 14
    assert all(2 <= n <= 15 for c in ("distance", "mcq") for n in masks[c])
    counts = [r["normalized_answer"] for r in records if r["category"] == "count"]
    assert set(counts) <= {0, 1, 2, 3, 4}
    distances = [r["normalized_answer"] for r in records if r["category"] == "distance"]
    assert all(0 <= d <= 18.4 for d in distances) and 0 in distances  # the real range; inside-buffer zeros
    questions = [r["conversations"][0]["value"] for r in records]
    assert 0 < sum(q.startswith("<image>\n") for q in questions) < len(questions)


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    config = dict(width=160, height=96, questions_per_frame=4)
    frames = (("train", 2), ("val", 1), ("test", 1))
    generate_dataset(SynthConfig(out=str(tmp_path / "a"), seed=5, frames=frames, **config), progress=False)
    generate_dataset(SynthConfig(out=str(tmp_path / "b"), seed=5, frames=frames, **config), workers=2, progress=False)
    generate_dataset(SynthConfig(out=str(tmp_path / "c"), seed=6, frames=frames, **config), progress=False)
    generate_dataset(SynthConfig(out=str(tmp_path / "d"), seed=5, frames=(("train", 1),), **config), progress=False)
    a, b, c, d = (files(tmp_path / k) for k in "abcd")
    assert a == b  # workers do not change a byte
    assert a["train/images/000000.png"] != c["train/images/000000.png"]
    assert a["train/images/000000.png"] != a["val/images/000000.png"]  # val frames are not train frames
    assert d["train/images/000000.png"] == a["train/images/000000.png"]  # a frame does not depend on N
    assert d["train/scenes/000000.json"] == a["train/scenes/000000.json"]


def test_rerun_resumes_and_other_settings_are_refused(tmp_path, capsys):
    out = tmp_path / "set"
    assert _synth(out, "--splits", "train=2", "--size", "160x96") == 0
    image = out / "train" / "images" / "000000.png"
    before = (image.stat().st_mtime_ns, (out / "train.json").read_bytes())
    assert _synth(out, "--splits", "train=3", "--size", "160x96") == 0  # frame 0 and 1 are reused
    assert image.stat().st_mtime_ns == before[0]
    records, old = _load(out / "train.json"), json.loads(before[1])
    assert records[: len(old)] == old
    assert {r["image"] for r in records} == {"000000.png", "000001.png", "000002.png"}
    capsys.readouterr()
    assert _synth(out, "--splits", "train=2", "--size", "160x96", "--seed", "9") == 2
    assert "other settings" in capsys.readouterr().err
    assert _synth(out, "--splits", "train=1", "--size", "160x96", "--seed", "9", "--force") == 0


@pytest.mark.parametrize("bad", [["--size", "640"], ["--size", "10x10"], ["--splits", "train=5,dev=2"],
                                 ["--splits", "train=-1"], ["--questions-per-frame", "0"], ["--frames", "-3"]])
def test_bad_arguments_give_one_clear_error(tmp_path, capsys, bad):
    assert main(["synth", "--out", str(tmp_path / "x"), *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smolrgpt synth: error:") and len(err.strip().splitlines()) == 1


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--frames", "--splits", "--seed", "--size", "--questions-per-frame", "--workers"):
        assert option in text
