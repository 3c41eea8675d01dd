"""The GPU path, run end to end in one command (under 8 minutes on one GPU).

    python benchmarks/gpu_check.py                          # GPU: smolrgpt-600m, bf16, NCCL
    python benchmarks/gpu_check.py --model CKPT --data VAL  # also bf16 vs fp32 on a trained checkpoint
    python benchmarks/gpu_check.py --dry-run                # CPU: smolrgpt-tiny, fp32 / fp16w, gloo

Sections: (1) inference in the device's fast mode: one question's latency, evaluation questions/s
through predict and decode tokens/s (inference.py's helpers, random weights, forced answer length);
(2) answer agreement of that mode with fp32 (random weights and forced tokens, or the accuracy gate of
precision_accuracy.py on --model/--data); (3) one stage-3 training step at the authors' per-GPU batch
(14): samples/s and peak memory, without and with gradient checkpointing; (4) `torchrun` DDP over the
GPUs present (NCCL; gloo with 2 CPU processes in a dry run) for 20 steps, then the same run killed
with SIGKILL after a checkpoint and resumed: the per-step losses must be identical. Prints a table, then
one JSON line per section and a summary line.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
STAGE3 = HERE.parent / "src" / "smolrgpt" / "demo" / "stage3.yaml"
AUTHORS_BATCH = 14  # the authors' per-GPU batch in stage 3


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # process-wide on a CPU


def inference_section(plan: dict, folder: Path) -> dict:
    inference = _benchmark("inference")
    rgb, depth, masks = inference.write_inputs(folder, size=plan["image_size"])
    engine = inference.build_engine(plan["preset"], plan["fast"], plan["device"], batch_size=8)
    inference.one_question(engine, rgb, depth, masks[:2], inference.QUESTION_2, 2)  # warm-up
    latency, timings, _ = min((inference.one_question(engine, rgb, depth, masks[:2], inference.QUESTION_2,
                                                      plan["tokens"]) for _ in range(2)), key=lambda r: r[0])
    steps = timings.get("decode_steps", 0) - 1
    qps = inference.eval_throughput(engine, folder / "eval", plan["eval_frames"], 8, plan["tokens"], one_by_one=False,
                                    size=plan["image_size"])
    return {"section": "inference", "precision": plan["fast"], "question_latency_s": round(latency, 3),
            "eval_questions_per_s": round(qps, 2),
            "decode_tokens_per_s": round(steps / timings["decode_s"], 1) if steps > 0 else None}


def agreement_section(plan: dict, folder: Path, args) -> dict:
    """The fast mode against fp32: the accuracy gate on a trained checkpoint when one is given, else
    greedy answers of random weights forced to `tokens` tokens (a weaker check: near-tied logits)."""
    if args.model and args.data:
        gate = _benchmark("precision_accuracy")
        gate_args = argparse.Namespace(model=args.model, data=args.data, device=plan["device"], limit=args.limit,
                                       batch_size=16, max_new_tokens=64)
        result = gate.checkpoint_gate(gate_args, ["fp32", plan["fast"]])
        row = result["modes"][plan["fast"]]
        return {"section": "agreement", "on": "checkpoint", "mode": plan["fast"], "questions": result["questions"],
                "identical_normalized": row["identical_normalized"], "score_fp32": result["modes"]["fp32"]["score"],
                "score": row["score"], "accuracy_preserving": row["accuracy_preserving"]}
    inference = _benchmark("inference")
    from smolrgpt.data.sample import Region
    from smolrgpt.engine import Question

    rgb, depth, masks = inference.write_inputs(folder, size=plan["image_size"], seed=3)
    texts = {}
    for mode in ("fp32", plan["fast"]):
        engine = inference.build_engine(plan["preset"], mode, plan["device"], batch_size=8)
        frame = engine.frame(rgb, depth)
        questions = [Question(frame, q, [Region("mask", m) for m in (masks[i:] + masks[:i])[:q.count("<mask>")]])
                     for i, q in enumerate(inference.EVAL_QUESTIONS * 2)]
        texts[mode] = [a.text for a in engine.ask_batch(questions, max_new_tokens=plan["tokens"])]
        del engine
    same = sum(a == b for a, b in zip(texts["fp32"], texts[plan["fast"]]))
    return {"section": "agreement", "on": "random weights", "mode": plan["fast"], "questions": len(texts["fp32"]),
            "identical_text": round(same / len(texts["fp32"]), 3)}


def training_section(plan: dict) -> list[dict]:
    training = _benchmark("training")
    from smolrgpt.training import recipe
    from smolrgpt.training.config import OptimSection

    device = torch.device(plan["device"])
    rows = []
    for checkpointing in (False, True):
        model, processor, _ = training.build(plan["preset"])
        model.to(device)
        recipe.freeze_for_stage(model, 3)
        model.train()
        if checkpointing:
            recipe.enable_activation_checkpointing(model)
        batch = processor.collate([processor.prepare(s) for s in training.samples(3, AUTHORS_BATCH)], "right")
        optimizer = recipe.build_optimizer(model, 3, OptimSection())
        amp = recipe.resolve_precision("auto", device)
        tokens = recipe.answer_token_count(batch["labels"])
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

        def step():
            loss = recipe.summed_token_loss(model, batch, device, amp) / tokens
            loss.backward()
            optimizer.step()
            model.zero_grad(set_to_none=True)

        step()  # warm-up
        times = []
        for _ in range(plan["train_steps"]):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
        median = sorted(times)[len(times) // 2]
        rows.append({"section": "training_step", "preset": plan["preset"], "batch": AUTHORS_BATCH,
                     "gradient_checkpointing": checkpointing, "autocast": str(amp).replace("torch.", ""),
                     "seconds_per_step": round(median, 3), "samples_per_s": round(AUTHORS_BATCH / median, 2),
                     "peak_memory_gb": _peak_memory_gb(device)})
        del model, optimizer, batch
    return rows


def _losses(out: Path) -> dict[int, float]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records if r.get("type") == "train"}


def ddp_section(plan: dict, folder: Path) -> dict:
    """20 DDP steps straight through, then the same run SIGKILLed (torchrun and its workers) after a
    checkpoint and resumed with --resume: identical per-step losses expected."""
    env = dict(os.environ, PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false")
    if plan["device"] == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    data = folder / "ddp-data"
    subprocess.run([sys.executable, "-m", "smolrgpt.cli", "synth", "--out", str(data), "--splits",
                    plan["ddp_frames"], "--size", plan["synth_size"], "--questions-per-frame", "4", "--quiet"],
                   check=True, env=env, capture_output=True)
    nproc = plan["nproc"]

    def command(out: Path, *extra: str) -> list[str]:
        overrides = {"model.init": f"preset:{plan['preset']}", "data.train": data / "train.json",
                     "data.val": data / "val.json", "train.output_dir": out,
                     "train.batch_size": plan["ddp_batch"] * nproc, "train.grad_accum": 1,
                     "schedule.max_steps": plan["ddp_steps"], "checkpoint.save_every": plan["ddp_save_every"],
                     "train.eval_every": 0, "train.accuracy_samples": 0, "logging.progress": "false",
                     "logging.tensorboard": "false", "logging.plot": "false", "train.distributed": "ddp"}
        if plan["device"] == "cpu":
            overrides["train.num_threads"] = 1
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
                "127.0.0.1", "--master_port", str(plan["port"]), "-m", "smolrgpt.cli", "train", str(STAGE3),
                *[f"{k}={v}" for k, v in overrides.items()], *extra]

    full, killed = folder / "ddp-full", folder / "ddp-killed"
    start = time.perf_counter()
    proc = subprocess.run(command(full), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"DDP run failed:\n{proc.stderr[-3000:]}")
    full_s = time.perf_counter() - start
    victim = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    killed_at = None
    while victim.poll() is None:
        steps = _losses(killed)
        if steps and max(steps) >= plan["ddp_kill_at"]:
            killed_at = max(steps)
            os.killpg(victim.pid, signal.SIGKILL)  # the whole group: torchrun's agent and its workers
            break
        time.sleep(0.05)
    victim.wait()
    proc = subprocess.run(command(killed, "--resume"), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"DDP resume failed:\n{proc.stderr[-3000:]}")
    a, b = _losses(full), _losses(killed)
    return {"section": "ddp", "backend": "nccl" if plan["device"] == "cuda" else "gloo", "processes": nproc,
            "steps": len(a), "killed_at_step": killed_at, "resumed_identical": a == b and len(a) == plan["ddp_steps"],
            "steps_per_s": round(len(a) / full_s, 2), "last_loss": a.get(max(a)) if a else None}


def plan_for(args) -> dict:
    if args.dry_run:
        return {"device": "cpu", "preset": "smolrgpt-tiny", "fast": "fp16w", "tokens": 8, "image_size": (360, 640),
                "eval_frames": 2, "train_steps": 2, "nproc": 2, "ddp_frames": "train=6,val=1", "synth_size": "160x90",
                "ddp_batch": 2, "ddp_steps": 6, "ddp_save_every": 2, "ddp_kill_at": 3, "port": args.port}
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run for the CPU rehearsal")
    return {"device": "cuda", "preset": "smolrgpt-600m", "fast": "bf16", "tokens": 20, "image_size": (1080, 1920),
            "eval_frames": 4, "train_steps": 5, "nproc": torch.cuda.device_count(), "ddp_frames": "train=60,val=6",
            "synth_size": "640x360", "ddp_batch": AUTHORS_BATCH, "ddp_steps": 20, "ddp_save_every": 5,
            "ddp_kill_at": 12, "port": args.port}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU rehearsal: tiny preset, gloo, fp16w vs fp32")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: inference,agreement,training,ddp")
    parser.add_argument("--model", help="trained checkpoint for the agreement section (with --data)")
    parser.add_argument("--data", help="its validation split")
    parser.add_argument("--limit", type=int, default=200, help="agreement: first N questions of --data")
    parser.add_argument("--port", type=int, default=29531, help="torchrun's master port")
    args = parser.parse_args(argv)
    plan = plan_for(args)
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    sections: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="smolrgpt-gpu-check-") as tmp:
        folder = Path(tmp)
        if "inference" not in skip:
            sections.append(inference_section(plan, folder))
        if "agreement" not in skip:
            sections.append(agreement_section(plan, folder, args))
        if "training" not in skip:
            sections.extend(training_section(plan))
        if "ddp" not in skip:
            sections.append(ddp_section(plan, folder))
    name = torch.cuda.get_device_name() if plan["device"] == "cuda" else "CPU (dry run)"
    print(f"gpu_check on {name}: {plan['preset']}, fast mode {plan['fast']}, {time.perf_counter() - started:.0f} s")
    for row in sections:
        print(f"  {row['section']:<14}" + ", ".join(f"{k} {v}" for k, v in row.items() if k != "section"))
    for row in sections:
        print(json.dumps(row))
    summary = {"benchmark": "gpu_check", "device": name, "dry_run": args.dry_run, "preset": plan["preset"],
               "seconds": round(time.perf_counter() - started, 1), "sections": [r["section"] for r in sections]}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
