"""Exact resume after a real kill, and refusal of corrupt or partial checkpoints.

Tolerance of the resume comparison: none. On the CPU with data-loader workers 0, one thread and
deterministic kernels, the resumed run's losses and final weights are bit-for-bit those of the run that
was never interrupted.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from smolrgpt.cli import main
from smolrgpt.errors import CheckpointError
from smolrgpt.training.state import read_state, verify_checkpoint
from training_helpers import (DEMO_CONFIGS, quick_overrides, run, run_killed, smolrgpt_cmd, train_losses,
                                   write_track3_set)

STEPS = 10


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = write_track3_set(root / "data", {"train": 8, "val": 2})
    config = str(DEMO_CONFIGS / "stage3.yaml")

    def overrides(out):
        # a lead-in of 5 steps: the checkpoint at step 3 resumes inside it and crosses into the main mix
        return quick_overrides(data, out, schedule__max_steps=STEPS, checkpoint__save_every=3,
                               train__eval_every=4, logging__tensorboard="true", data__lead_in__share=0.5,
                               data__lead_in__repeats__left_right=1.0)

    full = root / "uninterrupted"
    run(smolrgpt_cmd("train", config, *overrides(full)))
    killed = root / "killed"
    kill_step = run_killed(smolrgpt_cmd("train", config, *overrides(killed)), killed, at_step=5)
    assert kill_step < STEPS
    checkpoint_step = json.loads((killed / "last" / "trainer_state.json").read_text())["step"]
    run(smolrgpt_cmd("train", config, *overrides(killed), "--resume"))
    return {"full": full, "killed": killed, "kill_step": kill_step, "checkpoint_step": checkpoint_step,
            "config": config, "overrides": overrides, "data": data}


def test_resumed_run_equals_uninterrupted_run(runs):
    full, resumed = train_losses(runs["full"]), train_losses(runs["killed"])
    assert runs["checkpoint_step"] in (3, 6) and runs["checkpoint_step"] <= runs["kill_step"]
    assert sorted(resumed) == list(range(1, STEPS + 1))  # the steps after the checkpoint were not duplicated
    assert resumed == full  # exactly: every step, before and after the kill
    a = load_file(str(runs["full"] / "last" / "model.safetensors"))
    b = load_file(str(runs["killed"] / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    evals = [json.loads(x) for x in (runs["killed"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["type"] == "eval"] == [4, 8, 10]
    state = read_state(runs["killed"] / "last")
    assert state["step"] == STEPS and state["optimizer"]["state"]  # optimizer moments were saved
    assert state["lead_in_steps"] == 5
    assert (runs["killed"] / "tensorboard").is_dir()


def test_running_again_without_resume_is_refused(runs, capsys):
    args = ["train", runs["config"], *runs["overrides"](runs["full"])]
    assert main(args) == 2
    assert "already holds a run: pass --resume" in capsys.readouterr().err


def test_corrupt_or_partial_checkpoints_are_refused(runs, tmp_path, capsys):
    good = runs["full"] / "last"
    verify_checkpoint(good)

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    with open(truncated / "model.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(truncated / "model.safetensors") // 2)
    with pytest.raises(CheckpointError, match=r"corrupt: model.safetensors has \d+ bytes"):
        read_state(truncated)

    flipped = tmp_path / "flipped"
    shutil.copytree(good, flipped)
    data = bytearray((flipped / "trainer_state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (flipped / "trainer_state.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="trainer_state.pt does not match its sha256"):
        read_state(flipped)

    partial = tmp_path / "partial"
    shutil.copytree(good, partial)
    (partial / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json: the checkpoint is partial"):
        verify_checkpoint(partial)

    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / "trainer_state.pt").unlink()
    with pytest.raises(CheckpointError, match="incomplete: trainer_state.pt is missing"):
        verify_checkpoint(missing)

    # Through the command: a run whose `last` is truncated is refused with one clear line.
    run_dir = tmp_path / "run"
    shutil.copytree(runs["full"], run_dir)
    (run_dir / "DONE").unlink()
    with open(run_dir / "last" / "model.safetensors", "r+b") as f:
        f.truncate(100)
    assert main(["train", runs["config"], *runs["overrides"](run_dir), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "smolrgpt train: error: checkpoint" in err and "is corrupt" in err


def test_a_stage_can_start_from_a_verified_checkpoint(runs, tmp_path):
    """`model.init` may name a training checkpoint (the next stage's start): it is verified first."""
    from smolrgpt.training.config import load_config
    from smolrgpt.training.trainer import build_initial_model

    train_file = f"data.train={runs['data'] / 'train.json'}"
    config = load_config(runs["config"], [f"model.init={runs['full'] / 'best'}", train_file])
    model, processor = build_initial_model(config.model, 512)
    assert processor.eos_token_id is not None
    broken = tmp_path / "best"
    shutil.copytree(runs["full"] / "best", broken)
    with open(broken / "model.safetensors", "r+b") as f:
        f.truncate(10)
    config = load_config(runs["config"], [f"model.init={broken}", train_file])
    with pytest.raises(CheckpointError, match="corrupt"):
        build_initial_model(config.model, 512)
