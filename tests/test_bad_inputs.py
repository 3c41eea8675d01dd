"""The bad-input corpus: every command and the HTTP service on broken or wrong input. Each case asserts the
exit status (or HTTP status) and that the one-line message names what is wrong; a traceback escaping
`smolrgpt.cli.main`, or any 5xx, fails the case by itself."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bad_inputs_support import (BROKEN_CHECKPOINTS, broken_checkpoint, make_checkpoint, run_cli,
                                split_with_a_truncated_image, truncated_png)
from conftest import write_track3_split
from training_helpers import DEMO_CONFIGS, quick_overrides, write_track3_set


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """One workspace for the module: a good checkpoint, a split, single frames and broken files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    ckpt = make_checkpoint(root / "ckpt")
    make_checkpoint(root / "ckpt2", seed=2)
    split = write_track3_split(root / "data", frames=2, questions_per_frame=2)
    test_split = write_track3_split(root / "data", split="test", frames=1, questions_per_frame=2, with_answers=False)
    rgb = root / "rgb.png"
    depth = root / "depth.png"
    Image.fromarray(np.full((90, 160, 3), 120, np.uint8)).save(rgb)
    Image.fromarray(np.full((90, 160), 80, np.uint8)).save(depth)
    truncated = root / "truncated.png"
    truncated.write_bytes(rgb.read_bytes())
    truncated_png(truncated)
    (root / "not_an_image.png").write_text("hello")
    (root / "folder").mkdir()
    (root / "text.txt").write_text("x")
    (root / "empty.json").write_text("[]")
    (root / "empty_file.json").write_text("")
    (root / "ints.json").write_text("[1, 2]")
    (root / "object.json").write_text('{"a": 1}')
    (root / "latin1.json").write_bytes(b'[{"id": "caf\xe9"}]')
    (root / "not_json.json").write_text("[{oops")
    deep = "[" * 100_000 + "]" * 100_000
    (root / "deep.json").write_text('[{"id": "x", "image": "a.png", "conversations": ' + deep + "}]")
    (root / "deep.jsonl").write_text('{"id": "x", "image": "a.png", "conversations": ' + deep + "}\n")
    (root / "rle_empty.json").write_text("[]")
    (root / "rle_wrong.json").write_text('{"size": [90, 160]}')
    (root / "rle_not_json.json").write_text("{")
    (root / "rle_ints.json").write_text("[1, 2]")
    (root / "rle_ok.json").write_text(json.dumps({"size": [90, 160], "counts": [0, 14400]}))
    (root / "existing.png").write_bytes(b"keep me")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    bad_split, bad_id, bad_file = split_with_a_truncated_image(root / "bad-data")
    return {"root": root, "ckpt": ckpt, "split": split, "test_split": test_split, "rgb": rgb, "depth": depth,
            "truncated": truncated, "foreign": foreign, "bad_split": bad_split, "bad_id": bad_id,
            "bad_file": bad_file}


def p(ws, key_or_name):
    """A fixture path by key, or a file of the workspace by name."""
    return ws[key_or_name] if key_or_name in ws else ws["root"] / key_or_name


def check(rc, err, status, *needles):
    lines = [line for line in err.strip().splitlines() if not line.startswith("smolrgpt: note:")]
    assert rc == status, err
    assert "Traceback" not in err
    if status == 2:
        assert lines and ("error:" in lines[-1]), err
    for needle in needles:
        assert needle in err, (needle, err)


# ---------------------------------------------------------------------- broken checkpoints x commands
def _command(ws, name: str, model, out):
    if name == "ask":
        return ["ask", "--model", model, "--image", ws["rgb"], "What is here?"]
    if name == "predict":
        return ["predict", "--model", model, "--data", ws["split"], "--out", out, "--no-progress"]
    if name == "eval":
        return ["eval", "--model", model, "--data", ws["split"], "--out", out, "--no-progress"]
    if name == "serve":
        return ["serve", "--model", model, "--port", "0"]
    if name == "info":
        return ["info", "--model", model]
    train_data = write_track3_set(ws["root"] / "train-data", {"train": 2, "val": 1}) \
        if not (ws["root"] / "train-data" / "train.json").exists() else ws["root"] / "train-data"
    overrides = quick_overrides(train_data, out, model__init=model, schedule__max_steps=1)
    return ["train", DEMO_CONFIGS / "stage3.yaml", *overrides]


LOADERS = ["ask", "predict", "eval", "serve", "train"]


@pytest.mark.parametrize("command", LOADERS)
@pytest.mark.parametrize("broken", sorted(BROKEN_CHECKPOINTS))
def test_a_broken_checkpoint_is_refused_in_one_line(ws, capsys, tmp_path, broken, command):
    folder = broken_checkpoint(ws["ckpt"], ws["root"] / "broken", broken)
    rc, _, err = run_cli(_command(ws, command, folder, tmp_path / "out"), capsys)
    check(rc, err, 2, BROKEN_CHECKPOINTS[broken][1])
    assert str(folder) in err  # the message names the checkpoint


@pytest.mark.parametrize("command", LOADERS + ["info"])
@pytest.mark.parametrize("where", ["missing", "file"])
def test_a_checkpoint_that_is_not_a_folder_is_refused(ws, capsys, tmp_path, command, where):
    model = tmp_path / "nothing" if where == "missing" else ws["root"] / "text.txt"
    rc, _, err = run_cli(_command(ws, command, model, tmp_path / "out"), capsys)
    check(rc, err, 2, str(model), "not found" if where == "missing" else "is a file, not a checkpoint folder")


def test_a_checkpoint_without_manifest_loads_with_a_note(ws, capsys, tmp_path):
    import shutil

    foreign = tmp_path / "foreign-ckpt"
    shutil.copytree(ws["ckpt"], foreign)
    (foreign / "manifest.json").unlink()
    rc, out, err = run_cli(["ask", "--model", foreign, "--image", ws["rgb"], "--max-new-tokens", "2", "What?"], capsys)
    assert rc == 0 and "answer:" in out
    assert err.strip() == (f"smolrgpt: note: {foreign} has no manifest.json (not written by smolrgpt): its files "
                           "cannot be verified")


# ------------------------------------------------------------------------------------------------ ask
def _ask(ws, question="What is here?", *extra, image="rgb"):
    return ["ask", "--model", ws["ckpt"], "--image", p(ws, image), *extra, question]


ASK_CASES = {
    # name: (extra arguments, question, image, exit status, message parts)
    "empty_question": ([], "", "rgb", 2, ["the question is empty"]),
    "blank_question": ([], "   ", "rgb", 2, ["the question is empty"]),
    "image_is_a_folder": ([], "Q?", "folder", 2, ["--image", "is a folder, not an image file"]),
    "image_missing": ([], "Q?", "nope.png", 2, ["--image file not found", "nope.png"]),
    "image_not_an_image": ([], "Q?", "not_an_image.png", 2, ["not_an_image.png"]),
    "image_truncated": ([], "Q?", "truncated", 2, ["truncated.png"]),
    "depth_is_a_folder": (["--depth", "@folder"], "Q?", "rgb", 2, ["--depth", "is a folder"]),
    "depth_missing": (["--depth", "@nope_depth.png"], "Q?", "rgb", 2, ["--depth file not found"]),
    "box_nan": (["--depth", "@depth", "--box", "nan,0,10,10"], "Q <mask>?", "rgb", 2, ["bad --box", "finite"]),
    "box_inf": (["--depth", "@depth", "--box", "0,0,inf,10"], "Q <mask>?", "rgb", 2, ["bad --box", "finite"]),
    "box_three_numbers": (["--depth", "@depth", "--box", "1,2,3"], "Q <mask>?", "rgb", 2, ["bad --box", "4 numbers"]),
    "box_words": (["--depth", "@depth", "--box", "a,b,c,d"], "Q <mask>?", "rgb", 2, ["bad --box", "4 numbers"]),
    "box_inverted": (["--depth", "@depth", "--box", "10,10,5,20"], "Q <mask>?", "rgb", 2, ["x2 must be greater"]),
    "box_empty_height": (["--depth", "@depth", "--box", "0,10,5,10"], "Q <mask>?", "rgb", 2, ["y2 greater"]),
    "rle_empty_list": (["--depth", "@depth", "--rle", "@rle_empty.json"], "Q <mask>?", "rgb", 2,
                       ["rle_empty.json holds an empty list"]),
    "rle_wrong_dict": (["--depth", "@depth", "--rle", "@rle_wrong.json"], "Q <mask>?", "rgb", 2,
                       ["rle_wrong.json must hold a COCO RLE dict"]),
    "rle_ints": (["--depth", "@depth", "--rle", "@rle_ints.json"], "Q <mask>?", "rgb", 2, ["must hold a COCO RLE"]),
    "rle_not_json": (["--depth", "@depth", "--rle", "@rle_not_json.json"], "Q <mask>?", "rgb", 2,
                     ["rle_not_json.json is not valid JSON"]),
    "rle_missing": (["--depth", "@depth", "--rle", "@nope.json"], "Q <mask>?", "rgb", 2, ["RLE file not found"]),
    "rle_folder": (["--depth", "@depth", "--rle", "@folder"], "Q <mask>?", "rgb", 2, ["is a folder, not a JSON"]),
    "mask_missing": (["--depth", "@depth", "--mask", "@nope_mask.png"], "Q <mask>?", "rgb", 2, ["mask file not found"]),
    "mask_folder": (["--depth", "@depth", "--mask", "@folder"], "Q <mask>?", "rgb", 2, ["--mask", "is a folder"]),
    "tags_without_regions": ([], "Q <mask>?", "rgb", 2, ["1 <mask> tag(s) but 0 region(s)"]),
    "regions_without_tags": (["--depth", "@depth", "--box", "0,0,5,5"], "Q?", "rgb", 2,
                             ["0 <mask> tag(s) but 1 region(s)"]),
    "two_tags_one_region": (["--depth", "@depth", "--box", "0,0,5,5"], "Q <mask> <mask>?", "rgb", 2,
                            ["2 <mask> tag(s) but 1 region(s)"]),
    "regions_without_depth": (["--box", "0,0,5,5"], "Q <mask>?", "rgb", 2, ["needs --depth"]),
    "max_new_tokens_zero": (["--max-new-tokens", "0"], "Q?", "rgb", 2, ["--max-new-tokens must be >= 1"]),
    "max_new_tokens_negative": (["--max-new-tokens", "-4"], "Q?", "rgb", 2, ["--max-new-tokens must be >= 1"]),
    "max_new_tokens_huge": (["--max-new-tokens", "100000000"], "Q?", "rgb", 2,
                            ["--max-new-tokens 100000000 is more than the model's context of 2048 tokens"]),
    "max_new_tokens_text": (["--max-new-tokens", "many"], "Q?", "rgb", 2, ["--max-new-tokens", "invalid int"]),
    "device_potato": (["--device", "potato"], "Q?", "rgb", 2, ["--device 'potato' is not a torch device"]),
    "device_cuda": (["--device", "cuda"], "Q?", "rgb", 2, ["--device cuda: no CUDA device is available"]),
    "device_cuda_7": (["--device", "cuda:7"], "Q?", "rgb", 2, ["--device cuda:7: no CUDA device"]),
    "device_empty": (["--device", ""], "Q?", "rgb", 2, ["--device '' is not a torch device"]),
    "threads_zero": (["--threads", "0"], "Q?", "rgb", 2, ["--threads must be >= 1"]),
    "precision_bf16_on_cpu": (["--precision", "bf16"], "Q?", "rgb", 2, ["bf16"]),
    "precision_unknown": (["--precision", "fp8"], "Q?", "rgb", 2, ["--precision", "invalid choice"]),
    "show_folder_missing": (["--show", "@nowhere/x.png"], "Q?", "rgb", 2, ["--show: folder not found"]),
    "show_existing_file": (["--show", "@existing.png"], "Q?", "rgb", 2,
                           ["--show", "existing.png already holds a file of 7 bytes", "--overwrite"]),
    "show_is_a_folder": (["--show", "@folder"], "Q?", "rgb", 2, ["--show", "already holds a folder"]),
    "polarity_unknown": (["--depth-polarity", "up"], "Q?", "rgb", 2, ["--depth-polarity", "invalid choice"]),
}


@pytest.mark.parametrize("case", sorted(ASK_CASES))
def test_ask_refuses_bad_input(ws, capsys, case):
    extra, question, image, status, needles = ASK_CASES[case]
    extra = [str(p(ws, a[1:])) if a.startswith("@") else a for a in extra]
    rc, _, err = run_cli(_ask(ws, question, *extra, image=image), capsys)
    check(rc, err, status, *needles)
    if case == "show_existing_file":
        assert (ws["root"] / "existing.png").read_bytes() == b"keep me"


# ------------------------------------------------------------------------------------ predict and eval
PREDICT_CASES = {
    # name: (extra arguments, data, exit status, message parts); "@out" is a fresh output folder
    "limit_zero": (["--limit", "0"], "split", 2, ["--limit must be >= 1, got 0"]),
    "limit_negative": (["--limit", "-3"], "split", 2, ["--limit must be >= 1, got -3"]),
    "batch_size_zero": (["--batch-size", "0"], "split", 2, ["--batch-size must be >= 1"]),
    "max_new_tokens_zero": (["--max-new-tokens", "0"], "split", 2, ["--max-new-tokens must be >= 1"]),
    "max_new_tokens_huge": (["--max-new-tokens", "100000000"], "split", 2, ["more than the model's context"]),
    "threads_zero": (["--threads", "0"], "split", 2, ["--threads must be >= 1"]),
    "device_potato": (["--device", "potato"], "split", 2, ["--device 'potato' is not a torch device"]),
    "device_cuda": (["--device", "cuda"], "split", 2, ["no CUDA device is available"]),
    "data_missing": ([], "nope.json", 2, ["nope.json", "file not found"]),
    "data_empty_list": ([], "empty.json", 2, ["empty.json", "holds no records"]),
    "data_empty_file": ([], "empty_file.json", 2, ["empty_file.json"]),
    "data_ints": ([], "ints.json", 2, ["ints.json", "the first record is a JSON int"]),
    "data_object": ([], "object.json", 2, ["object.json", "expected a JSON array"]),
    "data_latin1": ([], "latin1.json", 2, ["latin1.json", "UTF-8"]),
    "data_not_json": ([], "not_json.json", 2, ["not_json.json"]),
    "data_nested_100000": ([], "deep.json", 2, ["deep.json", "nested too deeply to read"]),
    "data_jsonl_nested_100000": ([], "deep.jsonl", 2, ["deep.jsonl", "nested too deeply to read"]),
    "data_is_text": (["--format", "track3"], "text.txt", 2, ["text.txt"]),
    "format_unknown": (["--format", "csv"], "split", 2, ["csv"]),
    "out_is_a_file": (["--out", "@text.txt"], "split", 2, ["text.txt is an existing file", "--overwrite"]),
    "out_is_a_checkpoint": (["--out", "@ckpt2"], "split", 2, ["already holds a model checkpoint", "--overwrite"]),
    "out_is_a_foreign_folder": (["--out", "@foreign"], "split", 2, ["already holds a folder (notes.txt)"]),
    "out_is_the_model_with_overwrite": (["--out", "@ckpt", "--overwrite"], "split", 2,
                                        ["holds the --model", "choose another --out"]),
    "out_holds_the_data_with_overwrite": (["--out", "@data", "--overwrite"], "split", 2, ["holds the --data"]),
    "truncated_image_strict": (["--strict"], "bad_split", 2, ["--strict stops at the first bad record", "000000.png"]),
}


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
def test_predict_and_eval_refuse_bad_input(ws, capsys, tmp_path, command, case):
    extra, data, status, needles = PREDICT_CASES[case]
    extra = [str(p(ws, a[1:])) if a.startswith("@") else a for a in extra]
    argv = [command, "--model", ws["ckpt"], "--data", p(ws, data), "--no-progress", "--max-new-tokens", "2"]
    if "--out" not in extra:
        argv += ["--out", tmp_path / "out"]
    rc, _, err = run_cli(argv + extra, capsys)
    check(rc, err, status, *needles)
    if case in ("out_is_a_checkpoint", "out_is_the_model_with_overwrite"):
        for folder in (ws["ckpt"], ws["root"] / "ckpt2"):
            assert not (folder / "predictions.jsonl").exists() and not (folder / f"{command}_config.json").exists()
    if case == "out_is_a_file":
        assert (ws["root"] / "text.txt").read_text() == "x"


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_a_bad_record_is_reported_and_the_others_answered(ws, capsys, tmp_path, command):
    out = tmp_path / "out"
    rc, stdout, err = run_cli([command, "--model", ws["ckpt"], "--data", ws["bad_split"], "--out", out,
                               "--no-progress", "--max-new-tokens", "2"], capsys)
    assert rc == 1, err
    assert f"skipped sample {ws['bad_id']!r} in {ws['bad_split']}#record 0 (image {ws['bad_file']}):" in err
    assert "2 question(s) skipped: they cannot be answered" in err  # both questions of the truncated frame
    assert "answered 4 question(s)" in stdout
    skipped = json.loads((out / "skipped.json").read_text())
    assert [s["file"] for s in skipped] == [str(ws["bad_file"])] * 2
    assert len(json.loads((out / "submission.json").read_text())) == 4


def test_eval_needs_answers(ws, capsys, tmp_path):
    rc, _, err = run_cli(["eval", "--model", ws["ckpt"], "--data", ws["test_split"], "--out", tmp_path / "e",
                          "--no-progress"], capsys)
    check(rc, err, 2, "2 question(s) have no ground truth")


# ------------------------------------------------------------------------------------------------ init
INIT_CASES = {
    "onto_a_trained_checkpoint": ("trained", 2, ["already holds a trained checkpoint", "--overwrite"]),
    "onto_a_file": ("text.txt", 2, ["text.txt is an existing file", "--overwrite"]),
    "onto_a_foreign_folder": ("foreign", 2, ["already holds a folder (notes.txt)"]),
    "onto_a_foreign_checkpoint": ("foreign_ckpt", 2, ["already holds a model checkpoint"]),
    "onto_an_init_checkpoint_with_another_seed": ("ckpt", 2, ["made with other settings", "seed 1 -> 0"]),
}


@pytest.fixture(scope="module")
def trained(ws):
    """A folder laid out as `smolrgpt train` writes one: trainer state beside the weights, its manifest."""
    import shutil

    from smolrgpt.training.state import write_manifest

    folder = ws["root"] / "trained"
    if not folder.exists():
        shutil.copytree(ws["ckpt"], folder)
        (folder / "trainer_state.json").write_text("{}")
        write_manifest(folder)
        shutil.copytree(ws["ckpt"], ws["root"] / "foreign_ckpt")
        (ws["root"] / "foreign_ckpt" / "manifest.json").unlink()
    return folder


@pytest.mark.parametrize("case", sorted(INIT_CASES))
def test_init_never_replaces_what_it_did_not_write(ws, trained, capsys, case):
    target, status, needles = INIT_CASES[case]
    path = p(ws, target)
    before = {f.name: f.read_bytes() for f in path.iterdir()} if path.is_dir() else path.read_bytes()
    rc, _, err = run_cli(["init", "--out", path], capsys)
    check(rc, err, status, str(path), *needles)
    after = {f.name: f.read_bytes() for f in path.iterdir()} if path.is_dir() else path.read_bytes()
    assert after == before


@pytest.mark.parametrize("bad", [["--preset", "smolrgpt-huge"], ["--seed", "x"], []])
def test_init_bad_arguments(ws, capsys, tmp_path, bad):
    rc, _, err = run_cli(["init", *bad] + (["--out", tmp_path / "c"] if bad else []), capsys)
    check(rc, err, 2, "--out" if not bad else bad[0])


# ----------------------------------------------------------------------------------------------- synth
SYNTH_CASES = {
    "frames_zero": (["--frames", "0"], ["--frames must be >= 1, got 0"]),
    "frames_negative": (["--frames", "-3"], ["--frames must be >= 1, got -3"]),
    "splits_all_zero": (["--splits", "train=0,val=0"], ["asks for no frame at all"]),
    "splits_unknown": (["--splits", "dev=2"], ["cannot read 'dev=2'"]),
    "splits_twice": (["--splits", "train=1,train=2"], ["names 'train' twice"]),
    "splits_empty": (["--splits", ","], ["--splits is empty"]),
    "size_one_number": (["--size", "640"], ["--size"]),
    "questions_zero": (["--questions-per-frame", "0"], ["between 1 and 50"]),
    "questions_51": (["--questions-per-frame", "51"], ["between 1 and 50"]),
    "workers_zero": (["--workers", "0"], ["--workers must be >= 1"]),
    "seed_negative": (["--seed", "-1"], ["--seed must be >= 0"]),
    "out_is_a_file": (["--out", "@text.txt"], ["text.txt is an existing file"]),
    "out_is_a_foreign_folder": (["--out", "@foreign"], ["already holds a folder (notes.txt)"]),
    "out_is_a_checkpoint": (["--out", "@ckpt"], ["already holds a model checkpoint"]),
}


@pytest.mark.parametrize("case", sorted(SYNTH_CASES))
def test_synth_refuses_bad_input(ws, capsys, tmp_path, case):
    extra, needles = SYNTH_CASES[case]
    extra = [str(p(ws, a[1:])) if a.startswith("@") else a for a in extra]
    argv = ["synth", "--size", "160x96", "--quiet", *extra]
    if "--out" not in extra:
        argv += ["--out", tmp_path / "set"]
    rc, _, err = run_cli(argv, capsys)
    check(rc, err, 2, *needles)
    assert not (ws["foreign"] / "synth_manifest.json").exists() and not (ws["ckpt"] / "synth_manifest.json").exists()


# ------------------------------------------------------------------------------------------ data check
@pytest.fixture(scope="module")
def broken_data(ws):
    """Splits whose images or depth maps are broken in one way each."""
    out = {}
    for name in ("truncated_rgb", "truncated_depth", "garbage_rgb", "garbage_depth", "missing_rgb", "missing_depth"):
        split = write_track3_split(ws["root"] / "check" / name, frames=1, questions_per_frame=1)
        kind, which = name.split("_")
        path = split.parent / "val" / ("images/000000.png" if which == "rgb" else "depths/000000_depth.png")
        if kind == "truncated":
            truncated_png(path)
        elif kind == "garbage":
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
        else:
            path.unlink()
        out[name] = (split, path)
    return out


DATA_CHECK_CASES = {
    "truncated_rgb": (1, "unreadable_image"), "truncated_depth": (1, "unreadable_depth"),
    "garbage_rgb": (1, "unreadable_image"), "garbage_depth": (1, "unreadable_depth"),
    "missing_rgb": (1, "missing_image"), "missing_depth": (1, "missing_depth"),
}


@pytest.mark.parametrize("case", sorted(DATA_CHECK_CASES))
def test_data_check_decodes_every_image(broken_data, capsys, case):
    split, path = broken_data[case]
    status, kind = DATA_CHECK_CASES[case]
    rc, out, err = run_cli(["data", "check", split], capsys)
    assert rc == status, out + err
    assert kind in out and path.name in out, out


@pytest.mark.parametrize("name,needle", [("empty.json", "holds no records"), ("ints.json", "JSON int"),
                                         ("latin1.json", "UTF-8"), ("not_json.json", "not_json.json"),
                                         ("nope.json", "file not found"), ("object.json", "expected a JSON array"),
                                         ("deep.json", "record 0 is nested too deeply to read"),
                                         ("deep.jsonl", "the first line is nested too deeply to read")])
def test_data_check_refuses_unreadable_files(ws, capsys, name, needle):
    rc, _, err = run_cli(["data", "check", ws["root"] / name], capsys)
    check(rc, err, 2, name, needle)


# ----------------------------------------------------------------------------------------- train, demo
TRAIN_CASES = {
    "output_dir_is_a_file": ("text.txt", ["train.output_dir", "text.txt is an existing file",
                                          "remove it or choose another train.output_dir"]),
    "output_dir_is_a_foreign_folder": ("foreign", ["already holds a folder (notes.txt)"]),
    "output_dir_is_a_checkpoint": ("ckpt", ["already holds a model checkpoint"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_never_writes_into_what_it_did_not_make(ws, capsys, case):
    target, needles = TRAIN_CASES[case]
    argv = _command(ws, "train", "preset:smolrgpt-tiny", p(ws, target))
    rc, _, err = run_cli(argv, capsys)
    check(rc, err, 2, *needles)
    assert not (ws["foreign"] / "config.yaml").exists() and not (ws["ckpt"] / "config.yaml").exists()


@pytest.mark.parametrize("init,needle", [("preset:smolrgpt-huge", "unknown preset"),
                                         ("@nope", "checkpoint folder not found")])
def test_train_bad_model_init(ws, capsys, tmp_path, init, needle):
    init = str(ws["root"] / init[1:]) if init.startswith("@") else init
    rc, _, err = run_cli(_command(ws, "train", init, tmp_path / "run"), capsys)
    check(rc, err, 2, needle)


@pytest.mark.parametrize("target", ["foreign", "ckpt", "text.txt"])
def test_demo_never_writes_into_what_it_did_not_make(ws, capsys, target):
    rc, _, err = run_cli(["demo", "--out", p(ws, target), "--no-progress"], capsys)
    check(rc, err, 2, str(p(ws, target)), "remove it or choose another --out")
