"""`smolrgpt score` and `smolrgpt normalize`: the model-free evaluation commands.

Imports stay light (json, argparse; matplotlib only when a chart is asked for) so both commands run
on a machine without torch.
"""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from smolrgpt.atomic import write_text_atomic
from smolrgpt.data.sample import CATEGORIES
from smolrgpt.errors import SampleError
from smolrgpt.evaluation.normalize import UNANSWERABLE, classify_question, normalize_answer
from smolrgpt.evaluation.score import DEFAULT_RULE, RULES, SubmissionError, read_text_file, score_files
from smolrgpt.evaluation.summary import format_report, write_chart



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
