"""Which kinds of question does a model answer? Track 3 accuracy per question family of a synthetic split.

The four Track 3 categories mix questions of different difficulty: mcq holds "which of these is the
leftmost" (a comparison, like left/right) next to "which pallet should the empty transporter pick up" (a
3-D distance ranking); count asks about the leftmost, the middle or the buffer nearest a shelf. The
synthetic generator records each question's family (and which extreme it asks for) in the frame's scene
file, `SPLIT/scenes/NNNNNN.json`; this groups a `predictions.jsonl` (from `smolrgpt predict`, `eval` or
`demo`) by it and scores each group with the project's scorer.

    python experiments/accuracy_by_family.py --data runs/demo/data/val.json \
        --predictions runs/demo/eval/predictions.jsonl

Prints a table (category, family, questions, accuracy %, and the accuracy of always giving the group's
most frequent true answer) and one JSON line.

Decision: kept as a reproducible diagnostic for the per-family tables in docs/research.md; it reads
the synthetic generator's scene files, so it works on synthetic splits only.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


def question_families(data: Path) -> dict[str, str]:
    """Question id -> family (with the extreme it asks for, e.g. "mcq_extreme/leftmost")."""
    scenes = sorted((data.parent / data.stem / "scenes").glob("*.json"))
    if not scenes:
        raise SystemExit(f"{data.parent / data.stem / 'scenes'}: no scene files (only a synthetic split has them)")
    families = {}
    for scene in scenes:
        for q in json.loads(scene.read_text())["questions"]:
            select = q.get("params", {}).get("select")
            families[q["id"]] = q["family"] + (f"/{select}" if select else "")
    return families


def accuracy_by_family(records: list[dict], predictions: dict[str, str], families: dict[str, str],
                       source: str) -> list[dict]:
    """One row per (category, family): questions, accuracy %, and the accuracy % of always answering the
    group's most frequent true answer (what a model that ignores the frame can reach on it)."""
    from smolrgpt.evaluation.score import score_submission

    groups = collections.defaultdict(list)
    for r in records:
        if r["id"] not in families:
            raise SystemExit(f"{source}: question {r['id']} is in no scene file")
        if r["id"] not in predictions:
            raise SystemExit(f"{source}: question {r['id']} has no prediction")
        groups[(r["category"], families[r["id"]])].append(r)
    rows = []
    for (category, family), group in sorted(groups.items()):
        truth = [{"id": r["id"], "category": category, "normalized_answer": r["normalized_answer"]} for r in group]
        answered = [{"id": r["id"], "normalized_answer": predictions[r["id"]]} for r in group]
        common = collections.Counter(str(r["normalized_answer"]) for r in group).most_common(1)[0][0]
        constant = [{"id": r["id"], "normalized_answer": common} for r in group]
        rows.append({"category": category, "family": family, "questions": len(group),
                     "accuracy": round(score_submission(truth, answered).categories[category], 2),
                     "most_frequent_answer": round(score_submission(truth, constant).categories[category], 2)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a synthetic split file, e.g. DEMO/data/val.json")
    parser.add_argument("--predictions", type=Path, required=True, help="predictions.jsonl of that split")
    args = parser.parse_args(argv)
    records = json.loads(args.data.read_text())
    predictions = {}
    for line in args.predictions.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            predictions[row["id"]] = row["normalized_answer"]
    rows = accuracy_by_family(records, predictions, question_families(args.data), str(args.predictions))
    print(f"{'category':<11} {'family':<36} {'questions':>9} {'accuracy %':>11} {'most frequent %':>16}")
    for r in rows:
        print(f"{r['category']:<11} {r['family']:<36} {r['questions']:>9} {r['accuracy']:>11.2f} "
              f"{r['most_frequent_answer']:>16.2f}")
    print(json.dumps({"data": str(args.data), "predictions": str(args.predictions), "families": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
