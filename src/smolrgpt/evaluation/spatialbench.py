"""SpatialRGPT-Bench scoring without a judge model, laid out like SpatialRGPT's Table 1.

Qualitative questions (below/above, left/right, big/small, tall/short, wide/thin, behind/front) are
scored by answer matching: the ground-truth answer and the prediction are each reduced to the relation
that holds for region 0 relative to region 1 ("Yes" to "Is A taller than B?" -> tall; "B is taller."
-> short; "Region [1]" to "Which is taller, A or B?" -> short), with the same procedure the Track 3
left/right normaliser uses. The prediction is right iff the two agree; one that states no relation is
wrong.

Quantitative questions: the value is read with the shared unit parser (normalize.parse_quantity, in
metres); success iff 0.75*gt <= pred <= 1.25*gt (inclusive, exact decimals), abs-rel = |pred-gt|/gt.
Direction answers are clock hours ("at 10 o'clock"); success iff within one hour, 12 and 1 adjacent.

The benchmark's published GPT-4 judge can accept answers this matcher rejects (and vice versa), so
these numbers are comparable with each other, not exactly with the paper's.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Mapping

from smolrgpt.data.sample import Sample
from smolrgpt.evaluation.normalize import LEFT_RIGHT, UNANSWERABLE, canonical_text, parse_quantity, \
    relation_of_first_region
from smolrgpt.evaluation.score import SubmissionError

# column -> the two opposite relations and the words that state each
QUALITATIVE: dict[str, dict[str, str]] = {
    "below/above": {"below": r"below|beneath|under(?:neath)?|lower", "above": r"above|over|higher|on top|atop"},
    "left/right": LEFT_RIGHT,
    "big/small": {"big": r"big(?:ger|gest)?|large(?:r|st)?|greater|huge", "small": r"small(?:er|est)?|tin(?:y|ier|iest)|little"},
    "tall/short": {"tall": r"tall(?:er|est)?", "short": r"short(?:er|est)?"},
    "wide/thin": {"wide": r"wide(?:r|st)?|broad(?:er|est)?",
                  "thin": r"thin(?:ner|nest)?|narrow(?:er|est)?|slim(?:mer|mest)?|skinn(?:y|ier|iest)"},
    "behind/front": {"behind": r"behind|farther|further|in back|more distant", "front": r"in front|front|closer|nearer"},
}
# column -> the word that identifies it in qa_info.category ("direct_distance", "width_data", ...)
QUANTITATIVE: dict[str, str] = {
    "direct distance": "direct", "horizontal distance": "horizontal", "vertical distance": "vertical",
    "width": "width", "height": "height", "direction": "direction",
}
SUCCESS_LOW, SUCCESS_HIGH = Decimal("0.75"), Decimal("1.25")
_CLOCK_RE = re.compile(r"(?<![\d.])(\d{1,2})(?::00)?\s*(?:o'?\s*clock|oclock)\b")


def bench_column(qa_type: str, category: str) -> str:
    """The Table 1 column of a qa_info {type, category} pair; SubmissionError when unknown."""
    name = category.lower()
    if qa_type.lower() != "qualitative":
        # longest key first: "direction" also contains "direct"
        for column, key in sorted(QUANTITATIVE.items(), key=lambda item: -len(item[1])):
            if key in name:
                return column
    for column, sides in QUALITATIVE.items():
        if any(side in name for side in sides):
            return column
    raise SubmissionError(f"unknown SpatialRGPT-Bench category {category!r} (type {qa_type!r})")


def clock_hour(text: str) -> int | None:
    """"at 10 o'clock" -> 10; 0 means 12."""
    match = _CLOCK_RE.search(canonical_text(text))
    if not match:
        return None
    hour = int(match.group(1))
    return 12 if hour == 0 else hour if 1 <= hour <= 12 else None


def hour_error(a: int, b: int) -> int:
    diff = abs(a - b) % 12
    return min(diff, 12 - diff)


@dataclass
class BenchResult:
    id: str
    column: str
    qualitative: bool
    gt: Any  # relation name, metres (float) or clock hour
    pred: Any  # the same, or None when the prediction states none
    success: bool
    abs_rel: float | None = None


def evaluate_answer(record_id: str, question: str, gt_answer: str, prediction: str | None,
                    qa_type: str, category: str) -> BenchResult | None:
    """One benchmark answer; None when the ground-truth answer itself cannot be read."""
    column = bench_column(qa_type, category)
    prediction = prediction or ""
    if column in QUALITATIVE:
        sides = QUALITATIVE[column]
        truth = relation_of_first_region(gt_answer, question, sides)
        if truth == UNANSWERABLE:
            return None
        guess = relation_of_first_region(prediction, question, sides)
        guess = None if guess == UNANSWERABLE else guess
        return BenchResult(record_id, column, True, truth, guess, guess == truth)
    if column == "direction":
        truth_hour, guess_hour = clock_hour(gt_answer), clock_hour(prediction)
        if truth_hour is None:
            return None
        success = guess_hour is not None and hour_error(truth_hour, guess_hour) <= 1
        return BenchResult(record_id, column, False, truth_hour, guess_hour, success)
    truth_value, guess_value = parse_quantity(gt_answer), parse_quantity(prediction)
    if truth_value is None:
        return None
    if guess_value is None:
        return BenchResult(record_id, column, False, float(truth_value), None, False)
    success = SUCCESS_LOW * truth_value <= guess_value <= SUCCESS_HIGH * truth_value
    abs_rel = float(abs(guess_value - truth_value) / truth_value) if truth_value else None
    return BenchResult(record_id, column, False, float(truth_value), float(guess_value), success, abs_rel)


@dataclass
class BenchReport:
    """Percentages. `qualitative_average` is the mean over the qualitative columns that have records."""

    qualitative: dict[str, dict[str, Any]]
    quantitative: dict[str, dict[str, Any]]
    qualitative_average: float | None
    results: list[BenchResult] = field(default_factory=list)
    unreadable_gt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fields(item: Sample | Mapping[str, Any]) -> tuple[str, str, str, dict]:
    """(id, question, gt answer, qa_info) from a Sample of data.spatialbench or a raw benchmark record."""
    if isinstance(item, Sample):
        return item.id, item.question, item.meta.get("gt_answer") or item.answer or "", item.meta["qa_info"]
    turns = item.get("conversations") or []
    question = turns[0]["value"] if turns else item.get("text_q", "")
    answer = turns[1]["value"] if len(turns) > 1 else ""
    return str(item["id"]), question, answer, item["qa_info"]


def score_spatialbench(items: Iterable[Sample | Mapping[str, Any]], predictions: Mapping[str, str],
                       partial: bool = False) -> BenchReport:
    """Score free-form predictions ({id: answer text}) on benchmark Samples or raw records.

    Every benchmark id needs a prediction unless `partial` (then only predicted ids are scored).
    """
    results, unreadable, missing = [], [], []
    for item in items:
        record_id, question, gt_answer, qa_info = _fields(item)
        if record_id not in predictions:
            missing.append(record_id)
            continue
        result = evaluate_answer(record_id, question, gt_answer, predictions[record_id],
                                 qa_info["type"], qa_info["category"])
        if result is None:
            unreadable.append(record_id)
        else:
            results.append(result)
    if missing and not partial:
        shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SubmissionError(f"{len(missing)} benchmark id(s) have no prediction ({shown}); "
                              "pass partial=True to score the predicted ones only")
    qualitative, quantitative = {}, {}
    for column in QUALITATIVE:
        rows = [r for r in results if r.column == column]
        correct = sum(r.success for r in rows)
        qualitative[column] = {"n": len(rows), "correct": correct,
                               "accuracy": 100.0 * correct / len(rows) if rows else None}
    for column in QUANTITATIVE:
        rows = [r for r in results if r.column == column]
        rel = [r.abs_rel for r in rows if r.abs_rel is not None]
        successes = sum(r.success for r in rows)
        quantitative[column] = {"n": len(rows), "success": successes,
                                "success_rate": 100.0 * successes / len(rows) if rows else None,
                                "abs_rel": sum(rel) / len(rel) if rel else None}
    present = [c["accuracy"] for c in qualitative.values() if c["accuracy"] is not None]
    return BenchReport(qualitative, quantitative, sum(present) / len(present) if present else None,
                       results, unreadable, missing)


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: BenchReport) -> str:
    """Markdown tables in the layout of SpatialRGPT's Table 1 (qualitative, then quantitative)."""
    qual_names = [c.title() for c in QUALITATIVE] + ["Avg"]
    qual_values = [_cell(report.qualitative[c]["accuracy"]) for c in QUALITATIVE] + [_cell(report.qualitative_average)]
    quant_names = [c.title().replace("Distance", "Dist.") for c in QUANTITATIVE]
    success = [_cell(report.quantitative[c]["success_rate"]) for c in QUANTITATIVE]
    abs_rel = [_cell(report.quantitative[c]["abs_rel"]) if c != "direction" else "-" for c in QUANTITATIVE]
    lines = ["Qualitative (accuracy %)", "",
             "| " + " | ".join(qual_names) + " |", "|" + "---|" * len(qual_names),
             "| " + " | ".join(qual_values) + " |", "",
             "Quantitative", "",
             "| | " + " | ".join(quant_names) + " |", "|---|" + "---|" * len(quant_names),
             "| Success rate (%) ↑ | " + " | ".join(success) + " |",
             "| Abs. rel. error ↓ | " + " | ".join(abs_rel) + " |"]
    counts = [f"{c}: {report.qualitative[c]['n']}" for c in QUALITATIVE] + \
             [f"{c}: {report.quantitative[c]['n']}" for c in QUANTITATIVE]
    lines += ["", "records per column: " + ", ".join(counts)]
    if report.unreadable_gt:
        lines.append(f"ground-truth answers that could not be read (left out): {len(report.unreadable_gt)}")
    if report.missing:
        lines.append(f"records without a prediction (left out, partial scoring): {len(report.missing)}")
    return "\n".join(lines)
