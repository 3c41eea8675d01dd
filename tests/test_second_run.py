"""Every writing command run twice into the same place: with the same settings it resumes (or redoes the
same thing) and keeps what is there; with other settings it refuses, names the difference and changes
nothing; with --overwrite (where the command has it) it starts afresh."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from bad_inputs_support import make_checkpoint, run_cli
from conftest import write_track3_split
from training_helpers import DEMO_CONFIGS, quick_overrides, write_track3_set


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("second-run")
    return {"root": root, "a": make_checkpoint(root / "a", seed=1), "b": make_checkpoint(root / "b", seed=2),
            "split": write_track3_split(root / "data", frames=2, questions_per_frame=3),
            "other_split": write_track3_split(root / "other", frames=2, questions_per_frame=2)}


# ------------------------------------------------------------------------------------------------ init
def test_init_twice(tmp_path, capsys):
    out = tmp_path / "ck"
    assert run_cli(["init", "--out", out, "--seed", "3"], capsys)[0] == 0
    first = snapshot(out)
    assert run_cli(["init", "--out", out, "--seed", "3"], capsys)[0] == 0  # the same settings: the same files
    assert snapshot(out) == first
    rc, _, err = run_cli(["init", "--out", out, "--seed", "4"], capsys)
    assert rc == 2 and "made with other settings (seed 3 -> 4)" in err and snapshot(out) == first
    assert run_cli(["init", "--out", out, "--seed", "4", "--overwrite"], capsys)[0] == 0
    assert snapshot(out)["model.safetensors"] != first["model.safetensors"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["written_by"] == "init" and manifest["settings"]["seed"] == 4
    assert set(manifest["files"]) == set(snapshot(out)) - {"manifest.json"}


def test_init_overwrite_replaces_a_file_by_the_checkpoint(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("old")
    assert run_cli(["init", "--out", target, "--overwrite"], capsys)[0] == 0
    assert (target / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------- predict and eval
def _predict(ws, out, *extra, model="a", data="split", command="predict"):
    return [command, "--model", ws[model], "--data", ws[data], "--out", out, "--no-progress",
            "--max-new-tokens", "3", *extra]


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_predict_and_eval_twice(ws, tmp_path, capsys, command):
    out = tmp_path / "run"
    rc, stdout, err = run_cli(_predict(ws, out, command=command), capsys)
    assert rc == 0, err
    first = snapshot(out)
    config_file = f"{command}_config.json"
    rc, stdout, _ = run_cli(_predict(ws, out, command=command), capsys)  # same settings: nothing to redo
    assert rc == 0 and "answered 0 question(s), 6 already done" in stdout
    assert snapshot(out)["submission.json"] == first["submission.json"]
    assert snapshot(out)[config_file] == first[config_file]
    for extra, kw, needle in [(["--max-new-tokens", "5"], {}, "max_new_tokens 3 -> 5"),
                              (["--precision", "int8"], {}, "precision 'fp32' -> 'int8'"),
                              ([], {"model": "b"}, "model_sha256"),
                              ([], {"data": "other_split"}, "data_sha256")]:
        argv = _predict(ws, out, *extra, command=command, **kw)
        if extra[:1] == ["--max-new-tokens"]:
            argv = argv[:-2 - len(extra)] + extra  # replace the default 3
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2 and "made with other settings" in err and needle in err, err
        assert "--overwrite" in err
        assert snapshot(out) == first  # nothing rewritten, predict_config.json included
    rc, stdout, _ = run_cli(_predict(ws, out, "--overwrite", model="b", command=command), capsys)
    assert rc == 0 and "answered 6 question(s), 0 already done" in stdout
    assert json.loads((out / config_file).read_text())["model"] == str(ws["b"])


def test_a_rerun_may_change_what_does_not_change_answers(ws, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(_predict(ws, out, "--limit", "2"), capsys)[0] == 0
    rc, stdout, _ = run_cli(_predict(ws, out, "--batch-size", "2", "--threads", "1"), capsys)
    assert rc == 0 and "answered 4 question(s), 2 already done" in stdout


def test_predict_then_eval_share_the_answers(ws, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(_predict(ws, out), capsys)[0] == 0
    rc, stdout, _ = run_cli(_predict(ws, out, command="eval"), capsys)
    assert rc == 0 and "6 already done" in stdout


def test_outputs_follow_the_umask(ws, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert run_cli(_predict(ws, tmp_path / "run"), capsys)[0] == 0
        assert run_cli(["init", "--out", tmp_path / "ck"], capsys)[0] == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "run" / "submission.json", tmp_path / "run" / "predict_config.json",
                 tmp_path / "ck" / "model.safetensors", tmp_path / "ck" / "manifest.json"):
        assert path.stat().st_mode & 0o777 == 0o640, path
    assert (tmp_path / "ck").stat().st_mode & 0o777 == 0o750


# ----------------------------------------------------------------------------------------------- synth
def test_synth_twice(tmp_path, capsys):
    out = tmp_path / "set"
    argv = ["synth", "--out", out, "--splits", "train=1", "--size", "160x96", "--quiet"]
    assert run_cli(argv, capsys)[0] == 0
    first = snapshot(out)
    assert run_cli(argv, capsys)[0] == 0 and snapshot(out) == first
    rc, _, err = run_cli(argv + ["--seed", "5"], capsys)
    assert rc == 2 and "made with other settings (seed 0 -> 5)" in err and snapshot(out) == first
    assert run_cli(argv + ["--seed", "5", "--overwrite"], capsys)[0] == 0
    assert snapshot(out)["train/images/000000.png"] != first["train/images/000000.png"]


# ----------------------------------------------------------------------------------- ask --show, cache
def test_ask_show_twice(ws, tmp_path, capsys):
    image = tmp_path / "rgb.png"
    Image.fromarray(np.full((90, 160, 3), 99, np.uint8)).save(image)
    show = tmp_path / "show.png"
    argv = ["ask", "--model", ws["a"], "--image", image, "--max-new-tokens", "2", "--show", show, "What?"]
    assert run_cli(argv, capsys)[0] == 0
    drawn = show.read_bytes()
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and "--show" in err and "--overwrite" in err and show.read_bytes() == drawn
    assert run_cli(argv[:-1] + ["--overwrite", "What?"], capsys)[0] == 0


def test_data_prepare_twice(ws, tmp_path, capsys):
    out = tmp_path / "cache"
    argv = ["data", "prepare", ws["split"], "--out", out, "--model", ws["a"], "--no-progress"]
    assert run_cli(argv, capsys)[0] == 0
    first = snapshot(out)
    assert run_cli(argv, capsys)[0] == 0 and snapshot(out) == first
    rc, _, err = run_cli(["data", "prepare", ws["other_split"], "--out", out, "--model", ws["a"], "--no-progress"],
                         capsys)
    assert rc == 2 and "other data or settings" in err and snapshot(out) == first


# ----------------------------------------------------------------------------------------------- train
def test_train_twice(tmp_path, capsys):
    data = write_track3_set(tmp_path / "data", {"train": 2, "val": 1})
    out = tmp_path / "run"
    argv = ["train", DEMO_CONFIGS / "stage3.yaml", *quick_overrides(data, out, schedule__max_steps=1)]
    assert run_cli(argv, capsys)[0] == 0
    first = snapshot(out / "last")
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and "already holds a run: pass --resume" in err and snapshot(out / "last") == first
    rc, _, err = run_cli(argv + ["optim.weight_decay=0.5", "--resume"], capsys)
    assert rc == 2 and "--resume with a different recipe" in err and snapshot(out / "last") == first
    # the trained checkpoint is verified where it is used next
    shutil.copytree(out / "last", tmp_path / "copy")
    with open(tmp_path / "copy" / "model.safetensors", "r+b") as f:
        f.seek(-10, 2)
        f.write(b"\0" * 10)
    rc, _, err = run_cli(["ask", "--model", tmp_path / "copy", "--image", data / "train/images/000000.png", "Q?"],
                         capsys)
    assert rc == 2 and "model.safetensors does not match its sha256" in err


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_no_progress_silences_the_weight_loading_bar(ws, tmp_path, capsys, command):
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()  # training switches it off for the whole process
    hf_logging.enable_progress_bar()
    try:
        rc, _, err = run_cli(_predict(ws, tmp_path / "run", "--threads", "1", command=command), capsys)
        assert rc == 0 and "Loading weights" not in err and "predict:" not in err
        assert hf_logging.is_progress_bar_enabled()  # switched back on for whoever loads next
    finally:
        if not was:
            hf_logging.disable_progress_bar()


def test_predict_with_auto_says_which_mode_it_chose(ws, tmp_path, capsys):
    rc, _, err = run_cli(_predict(ws, tmp_path / "run", "--precision", "auto"), capsys)
    # the tiny model's weights stay in the CPU caches: auto keeps fp32 and F.linear (modeling/precision.py)
    assert rc == 0 and "precision=auto: fp32, remaining fp32 linear layers: row" in err, err
