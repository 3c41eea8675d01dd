"""Inference speed and memory: one question end to end, its breakdown, and evaluation throughput.

    python benchmarks/inference.py --preset smolrgpt-600m --precision auto
    python benchmarks/inference.py --preset smolrgpt-600m --precision fp32

Random weights (speed does not depend on them). Answers are forced to --tokens tokens. Every run also
times the plain fp32 path (transformers' generate on the full prompt, no reuse, row-major weights, one
question at a time) as the baseline of `speedup_vs_fp32_plain` and `eval_speedup`, and batched decoding
of 1-8 rows of one frame (`batched_decode`: GB/s of weights read per step and the share of the memory
bound). Prints a table, then one JSON line. Machine limits (matmul GFLOP/s, memory read GB/s) are measured
in the same run.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

QUESTION_2 = "How far is the pallet <mask> from the pallet <mask>?"
QUESTION_15 = ("Given the buffer masks <mask> <mask> <mask> and the pallet masks " + "<mask> " * 11 +
               "and the shelf <mask>, how many pallets are in the buffer region closest to the shelf?")
EVAL_QUESTIONS = [QUESTION_2, "Is the pallet <mask> to the left of the pallet <mask>?",
                  "Which of the pallets <mask> <mask> <mask> is the leftmost?", QUESTION_15]


def machine_limits(device: torch.device) -> tuple[float, float]:
    """(fp32 matmul GFLOP/s, memory read GB/s), each the best of several kernels and runs. On a CPU the
    matmul peak is the faster of MKL's and oneDNN's fp32 GEMM, and the read bound the fastest of a
    reduction and MKL's and oneDNN's matrix-vector products over a 256 MB matrix: a bound measured with
    one library's kernel alone would credit any faster kernel with more than the memory can give."""
    def best(fn, repeats):
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return min(times)

    from smolrgpt.modeling.precision import OneDnnLinear, onednn_available

    def onednn_layer(weight):  # the layer the model runs: weight [out, in]
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False).requires_grad_(False)
        linear.weight.copy_(weight)
        return OneDnnLinear(linear)

    onednn = device.type == "cpu" and onednn_available()
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    matmuls = [lambda: torch.mm(a, b)]
    if onednn:
        product = onednn_layer(b.t())
        matmuls.append(lambda: product(a))
    for fn in matmuls:
        fn()
    flops = max(2 * n**3 * 4 / best(lambda: [fn() for _ in range(4)], 3) / 1e9 for fn in matmuls)
    rows = 8192
    m, v = torch.randn(rows, rows, device=device), torch.randn(rows, device=device)
    reads = [lambda: torch.mv(m, v), lambda: m.sum()]
    if onednn:
        matvec = onednn_layer(m)
        reads.append(lambda: matvec(v[None]))
    for fn in reads:
        fn()
    bandwidth = max(m.numel() * 4 / best(fn, 5) / 1e9 for fn in reads)
    return flops, bandwidth


def linear_weights(module) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of every matrix-multiply layer (float or quantised)."""
    out = []
    for name, sub in module.named_modules():
        if hasattr(sub, "in_features") and hasattr(sub, "out_features"):
            out.append((name, sub.in_features, sub.out_features))
    return out


def write_inputs(folder: Path, size=(1080, 1920), regions=15, seed=0):
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // w), (yy * 255 // h), rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray((yy * 255 // h).astype(np.uint8)).save(folder / "depth.png")
    masks = []
    for k in range(regions):
        m = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, h - 120), rng.integers(0, w - 160)
        m[y:y + 100, x:x + 140] = 255
        Image.fromarray(m).save(folder / f"mask{k}.png")
        masks.append(folder / f"mask{k}.png")
    return folder / "rgb.png", folder / "depth.png", masks


def build_engine(preset: str, precision: str, device: str, weight_layout: str = "auto", **engine_kwargs):
    from smolrgpt.engine import SmolRGPT
    from smolrgpt.modeling.config import SmolRGPTConfig
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.modeling.precision import apply_precision
    from smolrgpt.modeling.weights import tokenizer_for_preset
    from smolrgpt.processing.processor import SmolRGPTProcessor

    torch.manual_seed(0)
    config = SmolRGPTConfig.from_preset(preset)
    model = SmolRGPTForConditionalGeneration.from_scratch(config).eval().to(device)
    processor = SmolRGPTProcessor.for_model(tokenizer_for_preset(preset), config)
    model = apply_precision(model, precision, device, weight_layout=weight_layout)
    engine = SmolRGPT(model, processor, device=device, **engine_kwargs)
    engine.eos_token_id = -1  # fixed-length answers: every variant decodes the same number of tokens
    return engine


def one_question(engine, rgb, depth, masks, question, tokens):
    from smolrgpt.data.sample import Region

    engine.timings.clear()
    start = time.perf_counter()
    frame = engine.frame(rgb, depth)
    answer = engine.ask(frame, question, [Region("mask", m) for m in masks], max_new_tokens=tokens)
    return time.perf_counter() - start, dict(engine.timings), answer


def flop_estimate(engine, prompt_tokens: int, with_depth: bool) -> tuple[float, float]:
    """(vision FLOPs, LM prefill FLOPs) of one question: 2 x MACs of the matrix multiplies + attention."""
    vcfg = engine.model.config.vision_config
    patches = (vcfg.image_size // vcfg.patch_size) ** 2
    frames = 2 if with_depth else 1
    vision_macs = sum(i * o for _, i, o in linear_weights(engine.model.vision_tower)) * patches
    vision_macs += 3 * vcfg.patch_size**2 * vcfg.hidden_size * patches  # patch embedding
    vision_macs += 2 * patches**2 * vcfg.hidden_size * vcfg.num_hidden_layers  # attention scores and mix
    lm = [(n, i, o) for n, i, o in linear_weights(engine.model.language_model) if "lm_head" not in n]
    tcfg = engine.model.config.text_config
    lm_macs = sum(i * o for _, i, o in lm) * prompt_tokens
    lm_macs += 2 * prompt_tokens**2 / 2 * tcfg.hidden_size * tcfg.num_hidden_layers
    lm_macs += tcfg.hidden_size * tcfg.vocab_size  # the one logits row prefill computes
    return 2.0 * vision_macs * frames, 2.0 * lm_macs


def weight_layout(engine) -> str:
    """How the language model's linear layers and the remaining fp32 ones run: e.g. "fp16w + onednn"."""
    return f"{engine.model.inference_precision} + {engine.model.weight_layout}"


def decode_bytes_per_step(engine, context: int) -> float:
    """Bytes one decode step reads: every language-model matrix once, as stored (fp32, fp16, or int8
    plus its fp32 scales), and the keys and values of `context` positions per batch row."""
    from smolrgpt.modeling.precision import Fp16WeightLinear, Int8WeightLinear, OneDnnLinear

    total = 0.0
    for sub in engine.model.language_model.modules():
        if isinstance(sub, OneDnnLinear):
            total += 4 * sub.in_features * sub.out_features
        elif isinstance(sub, Fp16WeightLinear):
            total += 2 * sub.in_features * sub.out_features
        elif isinstance(sub, Int8WeightLinear):
            total += (sub.in_features + 4) * sub.out_features
        elif isinstance(sub, torch.nn.Linear):
            total += sub.weight.element_size() * sub.weight.numel()
    tcfg = engine.model.config.text_config
    head_dim = getattr(tcfg, "head_dim", None) or tcfg.hidden_size // tcfg.num_attention_heads
    return total + 2 * tcfg.num_hidden_layers * tcfg.num_key_value_heads * head_dim * context * 4


def batched_decode(engine, rgb, depth, masks, tokens: int, gbs: float, rows_list=(1, 2, 4, 8)) -> dict:
    """Decode rate of 1-8 questions about one frame answered together (as predict and the HTTP batcher
    do): each step reads every weight once for all rows."""
    from smolrgpt.data.sample import Region
    from smolrgpt.engine import Question

    frame = engine.frame(rgb, depth)
    regions = [Region("mask", m) for m in masks[:2]]
    engine.ask(frame, QUESTION_2, regions, max_new_tokens=2)  # encode the frame and its prefix once
    prompt = len(engine.processor.prompt_arrays([(QUESTION_2, None)], 2, train=False)[0])
    out = {}
    for rows in rows_list:
        best = 0.0
        for _ in range(2):
            engine.timings.clear()
            engine.ask_batch([Question(frame, QUESTION_2, regions) for _ in range(rows)], max_new_tokens=tokens)
            steps = engine.timings.get("decode_steps", 0.0) - 1
            best = max(best, steps / engine.timings["decode_s"] if steps > 0 else 0.0)
        step_bytes = decode_bytes_per_step(engine, rows * (prompt + tokens // 2))
        out[str(rows)] = {"steps_per_s": round(best, 2), "tokens_per_s": round(best * rows, 1),
                          "gbs": round(step_bytes * best / 1e9, 1),
                          "bandwidth_utilization": round(step_bytes * best / (gbs * 1e9), 3)}
    return out


def eval_throughput(engine, folder: Path, frames: int, per_frame: int, tokens: int, one_by_one: bool,
                    size=(1080, 1920)) -> float:
    """Questions/s on a synthetic split (many questions per frame) through predict, or one by one
    with a fresh frame per question and no reuse (the baseline)."""
    from smolrgpt.data.sample import Region, Sample
    from smolrgpt.evaluation.predict import predict

    rng = np.random.default_rng(1)
    samples = []
    for f in range(frames):
        frame_dir = folder / f"eval{f}"
        frame_dir.mkdir(parents=True, exist_ok=True)
        rgb, depth, masks = write_inputs(frame_dir, size=size, regions=15, seed=f + 10)
        for q in range(per_frame):
            question = EVAL_QUESTIONS[q % len(EVAL_QUESTIONS)]
            n = question.count("<mask>")
            chosen = rng.choice(len(masks), n, replace=False)
            samples.append(Sample(f"{f}-{q}", str(rgb), [(question, None)], [Region("mask", masks[k]) for k in chosen],
                                  depth=str(depth)))
    start = time.perf_counter()
    if one_by_one:
        for s in samples:
            frame = engine.frame(s.image, s.depth)
            engine.ask(frame, s.question, s.regions, max_new_tokens=tokens)
    else:
        predict(engine, samples, folder / "pred", batch_size=engine.batch_size, max_new_tokens=tokens, progress=False)
    return len(samples) / (time.perf_counter() - start)


# Cumulative variants for --ablation: each adds one optimisation to the one before.
ABLATION = (
    ("one by one, no reuse", dict(reuse_prefix=False, lazy_refine=False, weight_layout="row"), True),
    ("+ frame reuse, batching (predict)", dict(reuse_prefix=False, lazy_refine=False, weight_layout="row"), False),
    ("+ refine under masks only", dict(reuse_prefix=False, lazy_refine=True, weight_layout="row"), False),
    ("+ prefix KV reuse, static cache", dict(reuse_prefix=True, lazy_refine=True, weight_layout="row"), False),
    ("+ fp32 layers on oneDNN where faster", dict(reuse_prefix=True, lazy_refine=True), False),
)


def ablation(args, folder: Path) -> list[dict]:
    """Evaluation questions/s of each cumulative variant on the same split, with its ratio to the
    variant before and to the first."""
    rows = []
    for label, kwargs, one_by_one in ABLATION:
        engine = build_engine(args.preset, args.precision, args.device, batch_size=args.batch_size, **kwargs)
        qps = eval_throughput(engine, folder / f"ablation{len(rows)}", args.eval_frames, args.questions_per_frame,
                              args.tokens, one_by_one=one_by_one)
        rows.append({"variant": label, "questions_per_s": round(qps, 3),
                     "ratio_to_previous": round(qps / rows[-1]["questions_per_s"], 2) if rows else 1.0,
                     "ratio_to_first": round(qps / rows[0]["questions_per_s"], 2) if rows else 1.0})
        del engine
    return rows


def run(args) -> dict:
    from smolrgpt.modeling.precision import ACCURACY_PRESERVING, resolve_precision

    device = torch.device(args.device)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    precision = resolve_precision(args.precision, device)
    gflops, gbs = machine_limits(device)
    folder = Path(tempfile.mkdtemp(prefix="smolrgpt-bench-"))
    rgb, depth, masks = write_inputs(folder)
    result = {"device": str(device), "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "preset": args.preset, "precision": precision,
              "accuracy_preserving": ACCURACY_PRESERVING[precision],
              "matmul_gflops": round(gflops, 1), "mem_read_gbs": round(gbs, 1), "tokens": args.tokens}
    rows, answers = [], {}
    # The plain fp32 path is the baseline of every precision; "optimized" runs the chosen precision.
    for label, variant_precision, kwargs in (
            ("fp32 plain", "fp32", dict(reuse_prefix=False, lazy_refine=False, weight_layout="row")),
            ("optimized", precision, {})):
        engine = build_engine(args.preset, variant_precision, args.device, batch_size=args.batch_size, **kwargs)
        one_question(engine, rgb, depth, masks[:2], QUESTION_2, 2)  # warm-up
        runs = [one_question(engine, rgb, depth, masks[:2], QUESTION_2, args.tokens) for _ in range(args.repeats)]
        latency, timings, answer = min(runs, key=lambda r: r[0])
        latency15 = min(one_question(engine, rgb, depth, masks, QUESTION_15, args.tokens)[0]
                        for _ in range(args.repeats))
        rows.append((label, latency, latency15, timings))
        answers[label] = answer.text
        if label == "optimized":
            prompt = len(engine.processor.prompt_arrays([(QUESTION_2, None)], 2, train=False)[0])
            vision_flops, prefill_flops = flop_estimate(engine, prompt, with_depth=True)
            decode_s = timings.get("decode_s", 0.0)
            steps = timings.get("decode_steps", 0.0) - 1  # the first token comes from prefill
            tokens_per_s = steps / decode_s if decode_s else 0.0
            compute_s = timings["vision_s"] + timings["prefill_s"]
            step_bytes = decode_bytes_per_step(engine, prompt + args.tokens // 2)
            result.update(
                weight_layout=weight_layout(engine),
                question_latency_s=round(latency, 3), question_latency_15_masks_s=round(latency15, 3),
                preprocess_s=round(timings["preprocess_s"], 3), vision_s=round(timings["vision_s"], 3),
                refiner_pool_s=round(timings["refiner_pool_s"], 3), prefill_s=round(timings["prefill_s"], 3),
                decode_tokens_per_s=round(tokens_per_s, 2),
                prefill_flop_utilization=round((vision_flops + prefill_flops) / compute_s / (gflops * 1e9), 3),
                decode_gb_per_token=round(step_bytes / 1e9, 3),
                decode_bandwidth_utilization=round(step_bytes * tokens_per_s / (gbs * 1e9), 3),
                answer_example=answer.text[:60])
            if args.eval_frames:
                fast = eval_throughput(engine, folder / "fast", args.eval_frames, args.questions_per_frame,
                                       args.tokens, one_by_one=False)
                result["eval_questions_per_s"] = round(fast, 3)
            if args.batched:
                result["batched_decode"] = batched_decode(engine, rgb, depth, masks, args.tokens, gbs)
        else:
            result["fp32_plain_question_latency_s"] = round(latency, 3)
            result["fp32_plain_question_latency_15_masks_s"] = round(latency15, 3)
            if args.eval_frames:
                slow = eval_throughput(engine, folder / "slow", args.eval_frames, args.questions_per_frame,
                                       args.tokens, one_by_one=True)
                result["eval_one_by_one_questions_per_s"] = round(slow, 3)
        del engine
    # kept under their old names: the plain path was and is fp32 in fp32 runs
    result["plain_question_latency_s"] = result["fp32_plain_question_latency_s"]
    result["plain_question_latency_15_masks_s"] = result["fp32_plain_question_latency_15_masks_s"]
    if args.eval_frames:
        result["eval_speedup"] = round(result["eval_questions_per_s"] / result["eval_one_by_one_questions_per_s"], 2)
    # Same random weights in both variants: in fp32 the reuse paths and the weight layout must not change
    # the answer; in fp16w/int8 a changed answer on random weights is possible (near-tied logits).
    result["answers_match_plain"] = answers["fp32 plain"] == answers["optimized"]
    result["latency_speedup"] = round(result["fp32_plain_question_latency_s"] / result["question_latency_s"], 2)
    result["speedup_vs_fp32_plain"] = result["latency_speedup"] if result["accuracy_preserving"] else None
    if args.ablation:
        result["ablation"] = ablation(args, folder)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"SmolRGPT inference benchmark: {args.preset}, {precision}, {device} "
          f"({result['threads']} threads, {result['machine']})")
    print(f"machine: fp32 matmul {gflops:.1f} GFLOP/s, memory read {gbs:.1f} GB/s")
    print(f"{'variant':<12}{'1 question (2 masks) s':>24}{'15 masks s':>12}")
    for label, latency, latency15, _ in rows:
        print(f"{label:<12}{latency:>24.3f}{latency15:>12.3f}")
    print(f"breakdown (optimized): preprocess {result['preprocess_s']:.3f} s, vision {result['vision_s']:.3f} s, "
          f"refine+pool {result['refiner_pool_s']:.3f} s, prefill {result['prefill_s']:.3f} s, "
          f"decode {result['decode_tokens_per_s']:.1f} tokens/s")
    print(f"linear layers (language model + the rest): {result['weight_layout']}; answers match the plain fp32 path: {result['answers_match_plain']}; "
          f"speedup vs plain fp32 {result['latency_speedup']:.2f}x (accuracy-preserving mode: "
          f"{result['accuracy_preserving']})")
    print(f"utilisation: prefill FLOP {result['prefill_flop_utilization']:.2f}, "
          f"decode bandwidth {result['decode_bandwidth_utilization']:.2f} ({result['decode_gb_per_token']} GB/token)")
    if args.eval_frames:
        print(f"evaluation: {result['eval_questions_per_s']:.3f} questions/s through predict vs "
              f"{result['eval_one_by_one_questions_per_s']:.3f} one by one on the plain fp32 path "
              f"({result['eval_speedup']:.2f}x)")
    if args.batched:
        print(f"{'batched decode rows':<22}{'steps/s':>10}{'tokens/s':>10}{'GB/s':>8}{'of bound':>10}")
        for n, row in result["batched_decode"].items():
            print(f"{n:<22}{row['steps_per_s']:>10}{row['tokens_per_s']:>10}{row['gbs']:>8}"
                  f"{row['bandwidth_utilization']:>10}")
    if args.ablation:
        print(f"{'evaluation, one optimisation at a time':<40}{'questions/s':>12}{'vs previous':>13}{'vs first':>10}")
        for row in result["ablation"]:
            print(f"{row['variant']:<40}{row['questions_per_s']:>12.3f}{row['ratio_to_previous']:>12.2f}x"
                  f"{row['ratio_to_first']:>9.2f}x")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smolrgpt-tiny")
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "fp16w", "int8", "bf16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=20, help="answer length (forced)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per measurement (best is kept)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-frames", type=int, default=3, help="frames of the evaluation split (0: skip)")
    parser.add_argument("--questions-per-frame", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-batched", dest="batched", action="store_false",
                        help="skip the batched-decode measurement (1, 2, 4 and 8 rows)")
    parser.add_argument("--ablation", action="store_true",
                        help="also time the evaluation split with the optimisations added one at a time")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
