"""The evaluation commands: `smolrgpt predict` and `smolrgpt eval` answer a split with a checkpoint, then
score and report; `smolrgpt score` and `smolrgpt normalize` need no model.

Module-level imports stay light (json, argparse; torch only inside predict and eval, matplotlib only when a
chart is asked for) so score and normalize run on a machine without torch.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from smolrgpt.atomic import write_text_atomic
from smolrgpt.data.sample import CATEGORIES
from smolrgpt.errors import SampleError
from smolrgpt.evaluation.normalize import UNANSWERABLE, classify_question, normalize_answer
from smolrgpt.evaluation.score import DEFAULT_RULE, RULES, SubmissionError, read_text_file, score_files
from smolrgpt.evaluation.summary import format_report, write_bench_evaluation, write_chart, write_evaluation
from smolrgpt.modeling.precision_modes import PRECISION_HELP, PRECISIONS


# --------------------------------------------------------------------------- predict, eval


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
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help=PRECISION_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (answers, weight loading)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core); 1 is faster for tiny models "
                        "and on busy machines")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first record that cannot be answered (default: report it and go on)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds (default: resume only output of the same model, data and settings)")


# The settings an answer depends on: a rerun resumes only when all of them are the same.
RESUME_KEYS = ("model_sha256", "data_sha256", "format", "images_root", "depths_root", "max_new_tokens",
               "precision", "device")
CONFIG_NAMES = ("predict_config.json", "eval_config.json")


def _check_args(args) -> None:
    from smolrgpt.errors import ConfigError

    for flag, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens),
                        ("--limit", args.limit), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    for flag, folder in (("--images-root", args.images_root), ("--depths-root", args.depths_root)):
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"{flag} {folder}: folder not found")


def _read_samples(args) -> list:
    from smolrgpt.data import open_dataset

    _check_args(args)
    samples = []
    # validate=False: a record whose <mask> tags and regions disagree is refused by the engine, so predict
    # reports it and goes on (the reader's own check would stop the whole run at that record)
    for sample in open_dataset(args.data, args.format, images_root=args.images_root, depths_root=args.depths_root,
                               validate=False):
        samples.append(sample)
        if args.limit and len(samples) >= args.limit:
            break
    return samples


def _load(args, samples: list | None = None):
    import torch

    from smolrgpt.engine import SmolRGPT
    from smolrgpt.errors import SmolRGPTError
    from smolrgpt.modeling.checkpoint import quiet_loading

    if samples is None:
        samples = _read_samples(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    with quiet_loading(args.no_progress):
        try:
            engine = SmolRGPT.load(args.model, device=args.device, precision=args.precision,
                                   batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
        except ValueError as exc:  # a precision the device cannot run
            raise SmolRGPTError(str(exc)) from None
    if args.precision == "auto":  # say what auto chose: the answers depend on it
        model = engine.model
        print(f"precision=auto: {model.inference_precision}, remaining fp32 linear layers: {model.weight_layout}",
              file=sys.stderr)
    return samples, engine


def _resume_key(args) -> dict:
    from smolrgpt.atomic import file_sha256
    from smolrgpt.modeling.checkpoint import model_fingerprint

    def folder(value):
        return str(Path(value).resolve()) if value else None

    return {"model_sha256": model_fingerprint(args.model), "data_sha256": file_sha256(args.data),
            "format": args.format, "images_root": folder(args.images_root), "depths_root": folder(args.depths_root),
            "max_new_tokens": args.max_new_tokens, "precision": args.precision, "device": args.device}


def _saved_key(out: Path) -> dict | None:
    """The resume key recorded by an earlier predict or eval in `out` (they share predictions.jsonl)."""
    for name in CONFIG_NAMES:
        try:
            saved = json.loads((out / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(saved, dict) and isinstance(saved.get("resume_key"), dict):
            return saved["resume_key"]
    return None


def _claim_out(args, name: str) -> Path:
    """Refuse an --out holding something else, or answers made by another model, data or settings; resume
    the same run; start afresh with --overwrite. The settings file is written once, never rewritten with
    other settings."""
    from smolrgpt.atomic import claim_output, clear_folder, write_json_atomic

    from smolrgpt.errors import ConfigError

    out = Path(args.out)
    for flag, used in (("--model", args.model), ("--data", args.data)):
        inside = Path(used).resolve()
        if out.resolve() == inside or out.resolve() in inside.parents:  # --overwrite would delete it
            raise ConfigError(f"--out {out} holds the {flag} {used}; choose another --out")
    key = _resume_key(args)
    verdict = claim_output(out, name, overwrite=args.overwrite, saved=_saved_key(out), settings=key)
    if verdict == "replace" and out.is_dir():
        clear_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / f"{name}_config.json").is_file() or verdict != "same":
        record = {k: v for k, v in vars(args).items() if k != "func"}
        write_json_atomic(out / f"{name}_config.json", {**record, "resume_key": key}, indent=1)
    return out


def _summary(result, out: Path) -> int:
    from smolrgpt.evaluation.predict import SKIPPED, SUBMISSION

    print(f"answered {result.answered} question(s), {result.already_done} already done; "
          f"raw answers in {out / 'predictions.jsonl'}, submission in {out / SUBMISSION}")
    if result.bad:
        import sys

        for row in result.bad[:5]:
            print(f"skipped sample {row['id']!r} in {row['record']} (image {row['file']}): {row['error']}",
                  file=sys.stderr)
        print(f"{len(result.bad)} question(s) skipped: they cannot be answered (listed in {out / SKIPPED}); "
              "the submission lacks them", file=sys.stderr)
        return 1
    return 0


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p)


def run_predict(args) -> int:
    from smolrgpt.evaluation.predict import predict

    samples, engine = _load(args)
    out = _claim_out(args, "predict")
    result = predict(engine, samples, out, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     progress=not args.no_progress, strict=args.strict)
    return _summary(result, out)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--gt", help="answers file (id, category, normalized_answer) when the split has none, "
                                "e.g. test_answers.json")
    p.add_argument("--gallery", type=int, default=4, help="examples per category in the HTML gallery")
    p.add_argument("--rule", choices=("official", "exact-decimal"), default="official",
                   help="how length bounds are compared (see `smolrgpt score --help`); default official")


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
    samples, engine = _load(args, samples)
    out = _claim_out(args, "eval")
    result = predict(engine, samples, out, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     progress=not args.no_progress, strict=args.strict)
    answered = {r["id"] for r in result.rows}
    kept = [s for s in samples if s.id in answered]
    partial = bool(args.limit) or len(kept) < len(samples)
    if bench:
        write_bench_evaluation(kept, result.rows, out, Path(args.data).name, partial=partial, rule=args.rule)
    else:
        write_evaluation(kept, result.rows, out, Path(args.data).name, args.gallery, partial=partial, rule=args.rule)
    return _summary(result, out)


# --------------------------------------------------------------------------- score
def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Score a Track 3 submission with the official formula: per-category accuracy (distance within "
        "+-10%, count by truncated integer, left_right with aliases, mcq by first integer) and their "
        "macro average. Also reports distance/count mean absolute error and lists predictions that "
        "cannot be read (they count as wrong instead of crashing the scorer). With --bench, score "
        "free-form answers on SpatialRGPT-Bench instead (the 12 columns of its Table 1; no model, no images).",
        width=78
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "file formats (JSON array or JSON Lines):\n"
        "  --gt     val_answers.json style {id, category, normalized_answer}, or full Track 3 records\n"
        "           (with conversations); a record without category gets one from its question\n"
        "  --bench  SpatialRGPT-Bench_v1.json (only id, qa_info and conversations are read)\n"
        "  --pred   with --gt: [{id, normalized_answer}, ...] covering exactly the ground-truth ids;\n"
        "           with --bench: [{id, answer}, ...] free-form answers (predict's predictions.jsonl,\n"
        "           or SpatialRGPT's own {question_id, pred} output)\n\n"
        "examples:\n"
        "  smolrgpt score --gt val_answers.json --pred submission.json --chart scores.png\n"
        "  smolrgpt score --bench SpatialRGPT-Bench_v1.json --pred answers.jsonl --json"
    )
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt", metavar="GT.json", help="Track 3 ground-truth file")
    truth.add_argument("--bench", metavar="BENCH.json", help="SpatialRGPT-Bench file (its answers are the ground truth)")
    parser.add_argument("--pred", required=True, metavar="PRED.json", help="predictions to score")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the table (Track 3: final, categories, counts, "
                             "MAE, invalid/missing/extra ids; bench: columns, averages, unreadable_ground_truth)")
    parser.add_argument("--partial", action="store_true",
                        help="score only the ids present in both files and report the others, instead of "
                             "stopping with an error when ids are missing or extra")
    parser.add_argument("--rule", choices=RULES, default=DEFAULT_RULE,
                        help="how length bounds are compared: 'official' (default) in binary floats exactly as "
                             "the leaderboard's script (pred <= 1.10 * gt and pred >= 0.90 * gt), so a value on "
                             "the bound as written can fall outside it; 'exact-decimal' on the decimals as written")
    parser.add_argument("--chart", metavar="OUT.png", default=None,
                        help="also write a bar chart of the per-category and final scores to this PNG "
                             "(Track 3 only; default: no chart)")


def run_score(args: argparse.Namespace) -> int:
    if args.bench:
        from smolrgpt.evaluation.spatialbench import format_table, score_bench_files

        if args.chart:
            raise SubmissionError("--chart is for Track 3 scores (--gt), not --bench")
        bench = score_bench_files(args.bench, args.pred, partial=args.partial, rule=args.rule)
        print(json.dumps(bench.to_dict(), indent=2) if args.json
              else format_table(bench, title=f"{args.pred} vs {args.bench}"))
        return 0
    report = score_files(args.gt, args.pred, partial=args.partial, rule=args.rule)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=False, default=str))
    else:
        print(format_report(report, title=f"{args.pred} vs {args.gt}"))
    if args.chart:
        write_chart(report, args.chart, title=Path(args.pred).name)
        if not args.json:
            print(f"chart written to {args.chart}")
    return 0


# --------------------------------------------------------------------------- normalize
def add_normalize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Turn free-form answers into Track 3 normalized answers without a model. Reads JSON Lines with "
        "'question' and 'answer'; writes the same lines with 'normalized_answer' added (replacing any "
        "old one) and 'category' added when the line has none (an existing category is kept and used). "
        f"Answers with nothing usable get {UNANSWERABLE!r}, which the scorer counts as wrong."
    )
    parser.add_argument("--in", dest="input", required=True, metavar="IN.jsonl",
                        help="JSON Lines input, one object per line with 'question' and 'answer'")
    parser.add_argument("--out", required=True, metavar="OUT.jsonl",
                        help="JSON Lines output (written atomically; may be the input file)")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = read_text_file(path).splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SampleError(f"line {number} is not valid JSON ({exc.msg})", source=where) from exc
        if not isinstance(record, dict):
            raise SampleError(f"line {number} is a JSON {type(record).__name__}, expected an object", source=where)
        if not isinstance(record.get("answer"), str):
            raise SampleError(f"line {number} has no string 'answer'", source=where)
        if not isinstance(record.get("question"), str) and record.get("category") is None:
            raise SampleError(f"line {number} needs a string 'question' (or a 'category')", source=where)
        if record.get("category") is not None and record["category"] not in CATEGORIES:
            raise SampleError(f"line {number} has unknown category {record['category']!r}", source=where)
        records.append(record)
    return records


def run_normalize(args: argparse.Namespace) -> int:
    source, target = Path(args.input), Path(args.out)
    records = _read_jsonl(source)
    unanswerable = 0
    output = []
    for record in records:
        question = record.get("question")
        if record.get("category") is None:
            record["category"] = classify_question(question)
        record["normalized_answer"] = normalize_answer(record["answer"], question, record["category"])
        unanswerable += record["normalized_answer"] == UNANSWERABLE
        output.append(json.dumps(record, ensure_ascii=False) + "\n")
    write_text_atomic(target, "".join(output))
    print(f"normalized {len(records)} answer(s) from {source} -> {target} ({unanswerable} unanswerable)")
    return 0
