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
    p.add_argument("--precision", choices=("fp32", "int8", "bf16", "auto"), default="fp32",
                   help="fp32 (default), int8 weights (CPU), bf16 (GPU), or auto: the fastest for the device; "
                        "int8 changes answers, so compare its scores with fp32's before relying on it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read_samples(args) -> list:
    from smolrgpt.data import open_dataset

    samples = []
    for sample in open_dataset(args.data, args.format, images_root=args.images_root, depths_root=args.depths_root):
        samples.append(sample)
        if args.limit and len(samples) >= args.limit:
            break
    return samples


def _load(args, samples: list | None = None):
    from smolrgpt.engine import SmolRGPT
    from smolrgpt.errors import SmolRGPTError

    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise SystemExit("--batch-size and --max-new-tokens must be positive")
    if samples is None:
        samples = _read_samples(args)
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
    p.add_argument("--rule", choices=("official", "exact-decimal"), default="official",
                   help="how length bounds are compared (see `smolrgpt score --help`); default official")


def write_evaluation(samples, rows: list[dict], out: Path, title: str, gallery: int, partial: bool = False,
                     headline: str = "", rule: str = "official"):
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
                              partial=partial, rule=rule)
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


def write_bench_evaluation(samples, rows: list[dict], out: Path, title: str, partial: bool = False,
                           rule: str = "official"):
    """Score `predict` rows (their free-form `answer`) on SpatialRGPT-Bench samples; write report.txt and
    report.json (the Table 1 columns and every record's reading). Returns the BenchReport."""
    from smolrgpt.atomic import write_json_atomic, write_text_atomic
    from smolrgpt.evaluation.spatialbench import format_table, score_spatialbench

    report = score_spatialbench(samples, {r["id"]: r["answer"] for r in rows}, partial=partial, rule=rule)
    text = format_table(report, title=title)
    write_text_atomic(out / "report.txt", text + "\n")
    write_json_atomic(out / "report.json", report.to_dict(with_results=True), indent=1)
    print(text)
    print(f"\nwrote {out / 'report.txt'}, {out / 'report.json'}")
    return report


def _apply_answers(samples, gt_path: str, data_path: str) -> None:
    """Fill the samples' category and answer from an answers file; the ids must be the split's."""
    from smolrgpt.errors import SmolRGPTError
    from smolrgpt.evaluation.score import load_records

    truth = {str(r.get("id")): r for r in load_records(gt_path)}
    absent = [s.id for s in samples if s.id not in truth and (s.category is None or s.normalized_answer is None)]
    if absent:
        which = ("none of them is there: it holds the answers of another split" if len(absent) == len(samples)
                 else "it does not cover this split")
        raise SmolRGPTError(f"{gt_path}: {len(absent)} of the {len(samples)} question ids of {data_path} are not in "
                            f"this answers file (e.g. {absent[0]!r}); {which}")
    for s in samples:
        if s.id in truth:
            s.category, s.normalized_answer = truth[s.id].get("category"), truth[s.id].get("normalized_answer")


def run_eval(args) -> int:
    from smolrgpt.evaluation.predict import predict
    from smolrgpt.errors import SmolRGPTError

    out = Path(args.out)
    samples = _read_samples(args)
    bench = bool(samples) and all(s.meta.get("format") == "spatialbench" for s in samples)
    if bench and args.gt:
        raise SmolRGPTError(f"{args.data} is SpatialRGPT-Bench, which holds its own answers: drop --gt")
    if bench and any(s.depth is None for s in samples):
        raise SmolRGPTError(f"{args.data} is SpatialRGPT-Bench, which ships no depth maps: pass --depths-root, a "
                            "folder with one depth PNG per image at <depths-root>/<image_info.file_path with .png>, "
                            "bright = near (as Depth Anything writes them)")
    if args.gt:
        _apply_answers(samples, args.gt, args.data)
    unanswered = [] if bench else [s.id for s in samples if s.category is None or s.normalized_answer is None]
    if unanswered:
        raise SmolRGPTError(f"{len(unanswered)} question(s) have no ground truth (e.g. {unanswered[0]!r}); "
                            "pass --gt with the answers, or use `smolrgpt predict`")
    _record_run(args, out, "eval")
    samples, engine = _load(args, samples)
    result = predict(engine, samples, out, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     progress=not args.no_progress)
    if bench:
        write_bench_evaluation(samples, result.rows, out, Path(args.data).name, partial=bool(args.limit),
                               rule=args.rule)
    else:
        write_evaluation(samples, result.rows, out, Path(args.data).name, args.gallery, partial=bool(args.limit),
                         rule=args.rule)
    return 0
