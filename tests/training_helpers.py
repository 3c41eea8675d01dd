"""Fixture data for the training tests: a small Track 3-layout set written by the tests themselves
(tiny PNG frames, depth maps and COCO RLE masks), and config helpers. Holds no tests of its own."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DEMO_CONFIGS = REPO / "src" / "smolrgpt" / "demo"  # the demo's CPU-sized stage configs

# (category, question, answer, normalized answer); `{k}` makes answers of different lengths.
_TEMPLATES = [
    ("distance", "How far is the pallet <mask> from the pallet <mask>?",
     "The pallet [Region 0] is {d} meters from the pallet [Region 1].", "d"),
    ("left_right", "Is the pallet <mask> to the left of the pallet <mask>?", "Yes, it is to the left.", "left"),
    ("count", "How many pallets are in the buffer region <mask>?", "There are {w} pallets in the buffer region.", "n"),
    ("mcq", "Among the pallets <mask> <mask>, which one is the leftmost object from the image's perspective?",
     "The leftmost pallet is [Region 1].", 1),
]
_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def write_track3_set(root: Path, frames: dict[str, int] = None, questions_per_frame: int = 4,
                     size=(48, 80), seed: int = 0) -> Path:
    """root/{split}.json + root/{split}/images/NNNNNN.png + depths/NNNNNN_depth.png (real layout)."""
    frames = frames or {"train": 6, "val": 2}
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in frames.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "depths").mkdir(parents=True, exist_ok=True)
        records = []
        for f in range(count):
            name = f"{f:06d}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / "images" / name)
            depth = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
            Image.fromarray(depth).save(root / split / "depths" / f"{f:06d}_depth.png")
            for q in range(questions_per_frame):
                cat, question, answer, norm = _TEMPLATES[(f + q) % len(_TEMPLATES)]
                n_regions = question.count("<mask>")
                masks = []
                for _ in range(n_regions):
                    m = np.zeros((h, w), bool)
                    y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
                    m[y:y + 10, x:x + 10] = True
                    masks.append(_rle(m))
                d = round(float(rng.uniform(0.5, 12)), 2)
                n = int(rng.integers(0, 10))
                normalized = {"d": d, "n": n}.get(norm, norm) if isinstance(norm, str) else norm
                text = answer.format(d=d, w=_WORDS[n])
                records.append({"id": f"{split}-{f}-{q}", "image": name,
                                "conversations": [{"from": "human", "value": "<image>\n" + question},
                                                  {"from": "gpt", "value": text}],
                                "rle": masks, "category": cat, "normalized_answer": normalized,
                                "freeform_answer": text})
        (root / f"{split}.json").write_text(json.dumps(records))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quick_overrides(data: Path, out: Path, **extra) -> list[str]:
    """Overrides that make any stage-3 config a few-second run on the fixture set."""
    base = {
        "model.init": "preset:smolrgpt-tiny", "data.train": data / "train.json", "data.val": data / "val.json",
        "train.output_dir": out, "train.batch_size": 4, "train.grad_accum": 2, "train.eval_every": 0,
        "train.accuracy_samples": 0, "checkpoint.save_every": 0, "logging.progress": "false",
        "logging.tensorboard": "false", "logging.plot": "false", "train.num_threads": 1,
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


def smolrgpt_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "smolrgpt.cli", *args]


def run_env() -> dict:
    env = dict(os.environ)
    # a process group that lost a peer gives up after 2 minutes instead of torch's default 10 (or 60)
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false",
               SMOLRGPT_DIST_TIMEOUT_S="120")
    return env


def run(cmd: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """Run a command in a session of its own; past `timeout` the whole group (torchrun and its workers)
    is killed and the test fails, so a hung process group can never hang the suite."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env(), cwd=REPO,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(map(str, cmd))} did not end within {timeout} s (killed):\n"
                             f"{out[-3000:]}\n{err[-5000:]}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out[-3000:]}\n{err[-5000:]}"
    return done


def train_losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records if r["type"] == "train"}


def run_killed(cmd: list[str], out: Path, at_step: int, timeout: float = 180) -> int:
    """Start a training command and SIGKILL it (a real kill: no cleanup, no final checkpoint) once
    metrics.jsonl shows `at_step`; returns the last step it logged."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline, last = time.time() + timeout, None
    try:
        while proc.poll() is None and time.time() < deadline:
            steps = list(train_losses(out)) if (out / "metrics.jsonl").exists() else []
            if steps and max(steps) >= at_step:
                last = max(steps)
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: torchrun and its workers too
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and last is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert last is not None, f"the run ended (rc {proc.returncode}) before step {at_step}"
    assert not (out / "DONE").exists()
    return last
