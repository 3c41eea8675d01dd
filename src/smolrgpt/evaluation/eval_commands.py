"""`smolrgpt predict` and `smolrgpt eval`: answer a split with a checkpoint, then score and report."""
from __future__ import annotations

import argparse
from pathlib import Path


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="SmolRGPT checkpoint folder")
    p.add_argument("--data", required=True, help="split file (Track 3 JSON or any format `data check` reads)")
    p.add_argument("--out", required=True, help="output folder (a rerun resumes where it stopped)")
    p.add_argument("--format", default="auto", help="data format (default: detected)")
    p.add_argument("--images-root", help="image folder (default: the real layout next to the split file)")
    p.add_argument("--depths-root", help="depth folder (default: the real layout next to the split file)")
    p.add_argument("--batch-size", type=int, default=8, help="questions per generate() call")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (answers stop at their end)")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=("fp32", "fp16w", "int8", "bf16", "auto"), default="fp32",
                   help="fp32, fp16w or int8 (fp16 / int8 weights, fp32 math; CPU), bf16 (GPU), or auto: the fastest mode the accuracy gate found to keep fp32's answers (docs/performance.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load(args):
    from smolrgpt.data import open_dataset
    from smolrgpt.engine import SmolRGPT
    from smolrgpt.errors import SmolRGPTError

    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise SystemExit("--batch-size and --max-new-tokens must be positive")
    samples = []
    for sample in open_dataset(args.data, args.format, images_root=args.images_root, depths_root=args.depths_root):
        samples.append(sample)
        if args.limit and len(samples) >= args.limit:
            break
    try:
        engine = SmolRGPT.load(args.model, device=args.device, precision=args.precision,
                               batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    except ValueError as exc:  # a precision the device cannot run
        raise SmolRGPTError(str(exc)) from None
    return samples, engine


def _record_run(args, out: Path, name: str) -> None:
    from smolrgpt.atomic import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / f"{name}_config.json", {k: v for k, v in vars(args).items() if k != "func"}, indent=1)


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p)


def run_predict(args) -> int:
    from smolrgpt.evaluation.predict import SUBMISSION, predict

    out = Path(args.out)
    _record_run(args, out, "predict")
    samples, engine = _load(args)
    result = predict(engine, samples, out, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     progress=not args.no_progress)
    print(f"answered {result.answered} question(s), {result.skipped} already done; "
          f"raw answers in {out / 'predictions.jsonl'}, submission in {out / SUBMISSION}")
    return 0


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--gt", help="answers file (id, category, normalized_answer) when the split has none, "
                                "e.g. test_answers.json")
    p.add_argument("--gallery", type=int, default=4, help="examples per category in the HTML gallery")


def write_evaluation(samples, rows: list[dict], out: Path, title: str, gallery: int, partial: bool = False,
                     headline: str = ""):
    """Score `predict` rows against the samples' answers and write report.txt/json, the confusion tables,
    scores.png, distance_errors.png and the gallery; `headline` replaces the score table's text. Returns
    the ScoreReport."""
    from smolrgpt.atomic import write_json_atomic
    from smolrgpt.evaluation.commands import format_report, write_chart
    from smolrgpt.evaluation.report import (confusion, distance_histogram, format_confusion, pick_examples,
                                            write_gallery)
    from smolrgpt.evaluation.score import score_submission

    predictions = {r["id"]: r for r in rows}
    gt = [{"id": s.id, "category": s.category, "normalized_answer": s.normalized_answer} for s in samples]
    report = score_submission(gt, [{"id": r["id"], "normalized_answer": r["normalized_answer"]} for r in rows],
                              partial=partial)
    pairs = [(s.category, s.normalized_answer, predictions[s.id]["normalized_answer"]) for s in samples]
    text = [headline or format_report(report, title=title), "",
            format_confusion(confusion(pairs, "left_right"), "left_right"), "",
            format_confusion(confusion(pairs, "mcq"), "mcq")]
    n_hist = distance_histogram(pairs, out / "distance_errors.png")
    write_chart(report, out / "scores.png", title=title)
    page = write_gallery(pick_examples(samples, predictions, gallery), predictions, out, f"SmolRGPT on {title}")
    (out / "report.txt").write_text("\n".join(text) + "\n")
    write_json_atomic(out / "report.json", report.to_dict(), indent=1)
    print("\n".join(text))
    print(f"\nwrote {out / 'report.txt'}, {out / 'report.json'}, {out / 'scores.png'}, "
          f"{out / 'distance_errors.png'} ({n_hist} distances), {page}")
    return report


def run_eval(args) -> int:
    from smolrgpt.evaluation.predict import predict
    from smolrgpt.evaluation.score import load_records
    from smolrgpt.errors import SmolRGPTError

    out = Path(args.out)
    _record_run(args, out, "eval")
    samples, engine = _load(args)
    if args.gt:
        truth = {r["id"]: r for r in load_records(args.gt)}
        for s in samples:
            if s.id in truth:
                s.category, s.normalized_answer = truth[s.id].get("category"), truth[s.id].get("normalized_answer")
    unanswered = [s.id for s in samples if s.category is None or s.normalized_answer is None]
    if unanswered:
        raise SmolRGPTError(f"{len(unanswered)} question(s) have no ground truth (e.g. {unanswered[0]!r}); "
                            "pass --gt with the answers, or use `smolrgpt predict`")
    result = predict(engine, samples, out, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     progress=not args.no_progress)
    write_evaluation(samples, result.rows, out, Path(args.data).name, args.gallery, partial=bool(args.limit))
    return 0
