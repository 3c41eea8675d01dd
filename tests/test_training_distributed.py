"""Two processes (torchrun, gloo on the CPU) train like one process with the same global batch.

The effective batch of every step is the same set of samples whatever the number of processes and the
loss is normalised by the answer tokens of the whole effective batch, so the per-step losses agree up to
floating-point summation order: within 1e-5 relative (measured: about 1e-7) over 4 steps, although the
single process runs micro-batches of 4 and each of the two processes micro-batches of 2.
"""
from __future__ import annotations

import json
import sys

import pytest

from smolrgpt.modeling.checkpoint import load_checkpoint
from training_helpers import (DEMO_CONFIGS, free_port, quick_overrides, run, run_killed, smolrgpt_cmd, train_losses,
                                   write_track3_set)

TOLERANCE = 1e-5  # relative, per step


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_track3_set(tmp_path_factory.mktemp("ddp-data"), {"train": 8, "val": 2})


def _torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "smolrgpt.cli", *args]


def _eval(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "eval"][-1]


def test_two_processes_match_one_process(data, tmp_path):
    common = quick_overrides(data, "X", train__batch_size=8, schedule__max_steps=4)
    one, two = tmp_path / "one", tmp_path / "two"
    run(smolrgpt_cmd("train", str(DEMO_CONFIGS / "stage3.yaml"), *common, f"train.output_dir={one}"))
    proc = run(_torchrun(2, "train", str(DEMO_CONFIGS / "stage3.yaml"), *common, f"train.output_dir={two}"))
    assert "= 2 x 2 accumulation x 2 process(es)" in proc.stdout  # micro-batch 2 on each process
    a, b = train_losses(one), train_losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=TOLERANCE), (step, a[step], b[step])
    assert _eval(two)["val_loss"] == pytest.approx(_eval(one)["val_loss"], rel=TOLERANCE)
    assert json.loads((two / "last" / "trainer_state.json").read_text())["world_size"] == 2
    load_checkpoint(two / "last")  # a normal checkpoint folder, written once (by rank 0)


def test_fsdp_smoke_on_gloo(data, tmp_path):
    """FSDP (fully_shard per decoder layer) on 2 CPU processes: trains, evaluates with generation in
    lockstep, and gathers a full, loadable checkpoint."""
    out = tmp_path / "fsdp"
    common = quick_overrides(data, out, train__batch_size=8, schedule__max_steps=3, train__distributed="fsdp",
                             checkpoint__save_every=2, train__accuracy_samples=4, train__max_new_tokens=4)
    run(_torchrun(2, "train", str(DEMO_CONFIGS / "stage3.yaml"), *common))
    losses = train_losses(out)
    assert sorted(losses) == [1, 2, 3] and all(v == v for v in losses.values())
    assert _eval(out)["accuracy"] is not None
    model, _ = load_checkpoint(out / "last")
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_resume_exactly_after_a_kill(data, tmp_path, strategy):
    """torchrun killed as a whole (agent and workers) mid-run, then resumed: the same losses as an
    uninterrupted 2-process run, exactly."""
    def cmd(out, *extra):
        common = quick_overrides(data, out, train__batch_size=8, schedule__max_steps=8, checkpoint__save_every=3,
                                 train__distributed=strategy)
        return _torchrun(2, "train", str(DEMO_CONFIGS / "stage3.yaml"), *common, *extra)

    full, killed = tmp_path / "full", tmp_path / "killed"
    run(cmd(full))
    run_killed(cmd(killed), killed, at_step=4)
    run(cmd(killed, "--resume"))
    assert train_losses(killed) == train_losses(full)
