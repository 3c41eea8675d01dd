"""SpatialRGPT-Bench scoring without a judge model, in the 12 columns of SpatialRGPT's Table 1.

The benchmark file (`SpatialRGPT-Bench_v1.json`) is one JSON list of records `{id, image_info, qa_info
{type, category, class}, conversations, text_q, bbox, rle, file_path}`; scoring needs only `id`,
`qa_info` and `conversations` (the gpt turn is the ground truth). Its answers were written by
SpatialRGPT's question/answer templates, with region 0 as [A] and region 1 as [B].

Qualitative (18 categories `<relation>_predicate` / `<relation>_choice`, six columns): the relation the
question asks about is the category's first word, never guessed from the wording ("Is Region [0]
positioned before Region [1]?" is front_predicate). The ground truth and the prediction are each reduced
to the relation that holds for region 0 relative to region 1 (normalize.relation_of_first_region):
a verdict ("That is True.", "No, it is not."), a statement ("Indeed, Region [0] has a lesser height
compared to Region [1]."), or the region chosen ("With less height is Region [0]."). Right iff equal;
a prediction that states no relation is wrong.

Quantitative (6 categories): lengths are read in metres (normalize.parse_quantity: metres, centimetres,
inches, feet and their spellings; a pixel count is no length, so it is unreadable and wrong); success
iff 0.75*gt <= pred <= 1.25*gt, compared like the Track 3 scorer (score.within, rule "official" by
default); abs-rel = |pred - gt| / gt. `direction` answers are clock hours; success iff within one
hour (12 and 1 adjacent).

The benchmark's published GPT-4 judge can accept answers this reader rejects (and vice versa), so
these numbers are comparable with each other, not exactly with the paper's.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping

from smolrgpt.data.sample import Sample
from smolrgpt.evaluation.normalize import LEFT_RIGHT, UNANSWERABLE, canonical_text, parse_quantity, \
    relation_of_first_region
from smolrgpt.evaluation.score import DEFAULT_RULE, SubmissionError, check_rule, load_records, within

# relation -> the words and phrases (regex) that state it, as the templates and free answers write them
RELATIONS: dict[str, str] = {
    "below": r"below|beneath|under(?:neath)?|lower(?:\s+down)?",
    "above": r"above|over|higher(?:\s+up)?|on top|atop",
    "left": LEFT_RIGHT["left"],
    "right": LEFT_RIGHT["right"],
    "big": r"big(?:ger|gest)?|large(?:r|st)?|huge|more space|greater size",
    "small": r"small(?:er|est)?|tin(?:y|ier|iest)|little|less space",
    "tall": r"tall(?:er|est)?|(?:more|greater)\s+height|height\s+(?:is\s+)?(?:not\s+)?(?:larger|greater|bigger)|"
            r"height\s+(?:does\s+)?(?:not\s+)?(?:exceeds?|surpass(?:es)?)",
    "short": r"short(?:er|est)?|less(?:er)?\s+height|height\s+is\s+(?:not\s+)?(?:less|smaller|lower)",
    "wide": r"wide(?:r|st)?|broad(?:er|est)?|(?:more|greater)\s+width|width\s+(?:is\s+)?(?:not\s+)?(?:larger|greater|bigger)|"
            r"width\s+(?:does\s+)?(?:not\s+)?(?:exceeds?|surpass(?:es)?)|exceeds?",
    "thin": r"thin(?:ner|nest)?|narrow(?:er|est)?|slim(?:mer|mest)?|skinn(?:y|ier|iest)|less(?:er)?\s+width|"
            r"width\s+is\s+(?:not\s+)?(?:less|smaller)",
    "behind": r"behind|farther|further|in back|at the back|more distant|more backward",
    "front": r"in front|front|closer|nearer|less distant|more forward|(?:positioned|located|placed)\s+before",
}
QUALITATIVE: dict[str, tuple[str, str]] = {  # Table 1 column -> its two opposite relations
    "Below/Above": ("below", "above"), "Left/Right": ("left", "right"), "Big/Small": ("big", "small"),
    "Tall/Short": ("tall", "short"), "Wide/Thin": ("wide", "thin"), "Behind/Front": ("behind", "front"),
}
QUANTITATIVE: dict[str, str] = {  # Table 1 column -> the benchmark's qa_info.category
    "Direct distance": "distance_data", "Horizontal distance": "horizontal_distance_data",
    "Vertical distance": "vertical_distance_data", "Width": "width_data", "Height": "height_data",
    "Direction": "direction",
}
COLUMNS = (*QUALITATIVE, *QUANTITATIVE)
SUCCESS_LOW, SUCCESS_HIGH = Decimal("0.75"), Decimal("1.25")
_CLOCK_RE = re.compile(r"(?<![\d.])(\d{1,2})(?::00)?\s*(?:o'?\s*clock|oclock)\b")
# "Region [1] directly supports Region [0], with no vertical distance between them": a length of 0
_ZERO_LENGTH_RE = re.compile(r"\b(?:no|zero|without any)\s+(?:\w+\s+)?(?:distance|gap|space|separation)\b|"
                             r"\bsupport(?:s|ed|ing)?\b|\bin (?:immediate |direct )?(?:vertical )?contact\b")
BENCH_SHAPE = 'a JSON array (or JSON Lines) of {"id": ..., "answer": ...} objects'


def bench_column(qa_type: str, category: str) -> tuple[str, str | None]:
    """(Table 1 column, relation asked or None) of a qa_info {type, category}; SubmissionError when unknown."""
    name = category.strip().lower()
    relation = name.split("_")[0]
    if relation in RELATIONS and (name.endswith("_predicate") or name.endswith("_choice")):
        return next(c for c, pair in QUALITATIVE.items() if relation in pair), relation
    for column, bench_name in QUANTITATIVE.items():
        if name == bench_name:
            return column, None
    for key, column in (("direction", "Direction"), ("horizontal", "Horizontal distance"),
                        ("vertical", "Vertical distance"), ("width", "Width"), ("height", "Height"),
                        ("distance", "Direct distance")):
        if key in name and str(qa_type).lower() != "qualitative":
            return column, None
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


def read_length(text: str) -> Decimal | None:
    """The length an answer states, in metres; 0 for "no vertical distance"-style answers; else None."""
    value = parse_quantity(text)
    if value is None and _ZERO_LENGTH_RE.search(canonical_text(text)):
        return Decimal(0)
    return value


def read_relation(text: str, question: str, category: str) -> str | None:
    """The relation an answer states for region 0 relative to region 1, or None."""
    column, asked = bench_column("qualitative", category)
    pair = QUALITATIVE[column]
    relation = relation_of_first_region(text, question, {side: RELATIONS[side] for side in pair}, asked=asked,
                                        choice=category.lower().endswith("_choice"))
    return None if relation == UNANSWERABLE else relation


@dataclass
class BenchResult:
    id: str
    column: str
    gt: Any  # relation name, metres (float) or clock hour
    pred: Any  # the same, or None when the prediction states none
    success: bool
    abs_rel: float | None = None


def evaluate_answer(record_id: str, question: str, gt_answer: str, prediction: str | None, qa_type: str,
                    category: str, rule: str = DEFAULT_RULE) -> BenchResult | None:
    """One benchmark answer; None when the ground-truth answer itself cannot be read."""
    column, _ = bench_column(qa_type, category)
    prediction = "" if prediction is None else str(prediction)
    if column in QUALITATIVE:
        truth = read_relation(gt_answer, question, category)
        if truth is None:
            return None
        guess = read_relation(prediction, question, category)
        return BenchResult(record_id, column, truth, guess, guess == truth)
    if column == "Direction":
        truth_hour, guess_hour = clock_hour(gt_answer), clock_hour(prediction)
        if truth_hour is None:
            return None
        success = guess_hour is not None and hour_error(truth_hour, guess_hour) <= 1
        return BenchResult(record_id, column, truth_hour, guess_hour, success)
    truth_value, guess_value = read_length(gt_answer), read_length(prediction)
    if truth_value is None:
        return None
    if guess_value is None:
        return BenchResult(record_id, column, float(truth_value), None, False)
    success = within(truth_value, guess_value, SUCCESS_LOW, SUCCESS_HIGH, rule)
    abs_rel = float(abs(guess_value - truth_value) / truth_value) if truth_value else None
    return BenchResult(record_id, column, float(truth_value), float(guess_value), success, abs_rel)


@dataclass
class BenchReport:
    """`columns[name]` = {"type", "n", "correct", "success" (percent), and "abs_rel" for lengths}.
    The averages are over the columns of that type that have records."""

    columns: dict[str, dict[str, Any]]
    qualitative_average: float | None
    quantitative_average: float | None
    unreadable_ground_truth: int
    unreadable_ground_truth_ids: list[str] = field(default_factory=list)
    unreadable_predictions: int = 0
    missing: list[str] = field(default_factory=list)
    rule: str = DEFAULT_RULE
    results: list[BenchResult] = field(default_factory=list)

    def to_dict(self, with_results: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_results:
            data.pop("results")
        return data


def _fields(item: Sample | Mapping[str, Any]) -> tuple[str, str, str, dict]:
    """(id, question, gt answer, qa_info) from a Sample of data.spatialbench or a raw benchmark record."""
    if isinstance(item, Sample):
        return item.id, item.question, item.meta.get("gt_answer") or item.answer or "", item.meta["qa_info"]
    turns = item.get("conversations") or []
    question = turns[0]["value"] if turns else item.get("text_q", "")
    answer = turns[1]["value"] if len(turns) > 1 else ""
    return str(item["id"]), question, answer, item["qa_info"]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_spatialbench(items: Iterable[Sample | Mapping[str, Any]], predictions: Mapping[str, str],
                       partial: bool = False, rule: str = DEFAULT_RULE) -> BenchReport:
    """Score free-form predictions ({id: answer text}) on benchmark Samples or raw records.

    Every benchmark id needs a prediction unless `partial` (then only predicted ids are scored).
    """
    check_rule(rule)
    results, unreadable, missing = [], [], []
    for item in items:
        record_id, question, gt_answer, qa_info = _fields(item)
        if record_id not in predictions:
            missing.append(record_id)
            continue
        result = evaluate_answer(record_id, question, gt_answer, predictions[record_id],
                                 qa_info["type"], qa_info["category"], rule)
        if result is None:
            unreadable.append(record_id)
        else:
            results.append(result)
    if missing and not partial:
        shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SubmissionError(f"{len(missing)} benchmark id(s) have no prediction ({shown}); "
                              "use --partial / partial=True to score the predicted ones only")
    columns: dict[str, dict[str, Any]] = {}
    for column in COLUMNS:
        rows = [r for r in results if r.column == column]
        correct = sum(r.success for r in rows)
        entry: dict[str, Any] = {"type": "qualitative" if column in QUALITATIVE else "quantitative",
                                 "n": len(rows), "correct": correct,
                                 "success": 100.0 * correct / len(rows) if rows else None}
        if column in QUANTITATIVE and column != "Direction":
            entry["abs_rel"] = _mean([r.abs_rel for r in rows if r.abs_rel is not None])
        columns[column] = entry
    qual = [c["success"] for name, c in columns.items() if name in QUALITATIVE and c["success"] is not None]
    quant = [c["success"] for name, c in columns.items() if name in QUANTITATIVE and c["success"] is not None]
    return BenchReport(columns, _mean(qual), _mean(quant), len(unreadable), unreadable,
                       sum(r.pred is None for r in results), missing, rule, results)


# --------------------------------------------------------------------------- files
def load_bench(path: str | Path) -> list[dict[str, Any]]:
    """The benchmark's records, checked for what scoring needs (id, qa_info, a human and a gpt turn)."""
    records = load_records(path, "the SpatialRGPT-Bench JSON list of {id, qa_info, conversations, ...} records")
    seen: set[str] = set()
    for position, record in enumerate(records):
        where = f"{path}#record {position}"
        if "id" not in record:
            raise SubmissionError(f"{where}: no 'id'")
        record_id = str(record["id"])
        qa_info, turns = record.get("qa_info"), record.get("conversations")
        if not isinstance(qa_info, dict) or not isinstance(qa_info.get("category"), str):
            raise SubmissionError(f"record {record_id!r} in {where}: 'qa_info' must be an object with a string "
                                  "'category' (is this a SpatialRGPT-Bench file?)")
        if not isinstance(turns, list) or len(turns) < 2 or not all(
                isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns[:2]):
            raise SubmissionError(f"record {record_id!r} in {where}: 'conversations' must hold the question "
                                  "and the answer turns")
        try:
            bench_column(str(qa_info.get("type", "")), qa_info["category"])
        except SubmissionError as exc:
            raise SubmissionError(f"record {record_id!r} in {where}: {exc}") from None
        if record_id in seen:
            raise SubmissionError(f"{path}: id {record_id!r} appears more than once")
        seen.add(record_id)
    return records


def load_bench_predictions(path: str | Path) -> dict[str, str]:
    """{id: answer text} from [{"id", "answer"}] (JSON or JSON Lines; `smolrgpt predict`'s predictions.jsonl
    is one) or SpatialRGPT's own eval output ({"question_id", "pred", ...})."""
    answers: dict[str, str] = {}
    for position, record in enumerate(load_records(path, BENCH_SHAPE)):
        if "id" in record and "answer" in record:
            record_id, answer = record["id"], record["answer"]
        elif "question_id" in record and "pred" in record:
            record_id, answer = record["question_id"], record["pred"]
        else:
            keys = ", ".join(sorted(map(str, record))) or "none"
            raise SubmissionError(f"{path}: record {position} needs 'id' and 'answer' (has: {keys}); "
                                  f"expected {BENCH_SHAPE}")
        record_id = str(record_id)
        if record_id in answers:
            raise SubmissionError(f"{path}: id {record_id!r} appears more than once")
        answers[record_id] = "" if answer is None else str(answer)
    return answers


def score_bench_files(bench_path: str | Path, pred_path: str | Path, partial: bool = False,
                      rule: str = DEFAULT_RULE) -> BenchReport:
    records = load_bench(bench_path)
    predictions = load_bench_predictions(pred_path)
    known = {str(r["id"]) for r in records}
    extra = [i for i in predictions if i not in known]
    if extra and not partial:
        shown = ", ".join(repr(i) for i in extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise SubmissionError(f"{pred_path}: {len(extra)} id(s) are not in the benchmark {bench_path} ({shown}); "
                              "use --partial to score the overlap")
    return score_spatialbench(records, predictions, partial=partial, rule=rule)


# --------------------------------------------------------------------------- table
def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: BenchReport, title: str = "") -> str:
    """Markdown tables in the layout of SpatialRGPT's Table 1 (qualitative, then quantitative)."""
    cols = report.columns
    qual_names = [*QUALITATIVE, "Avg"]
    qual_values = [_cell(cols[c]["success"]) for c in QUALITATIVE] + [_cell(report.qualitative_average)]
    quant = list(QUANTITATIVE)
    lines = [f"SpatialRGPT-Bench{': ' + title if title else ''}", "",
             "Qualitative (the answer states the same relation)", "",
             "| | " + " | ".join(qual_names) + " |", "|---|" + "---|" * len(qual_names),
             "| Success rate (%) ↑ | " + " | ".join(qual_values) + " |",
             "| n | " + " | ".join(str(cols[c]["n"]) for c in QUALITATIVE) + f" | {sum(cols[c]['n'] for c in QUALITATIVE)} |",
             "", "Quantitative (success: within +-25%; direction: within 1 clock hour)", "",
             "| | " + " | ".join(quant) + " |", "|---|" + "---|" * len(quant),
             "| Success rate (%) ↑ | " + " | ".join(_cell(cols[c]["success"]) for c in quant) + " |",
             "| Abs. rel. error ↓ | " + " | ".join(_cell(cols[c].get("abs_rel")) for c in quant) + " |",
             "| n | " + " | ".join(str(cols[c]["n"]) for c in quant) + " |",
             "", f"comparison rule: {report.rule}",
             f"unreadable ground-truth answers (left out): {report.unreadable_ground_truth}",
             f"predictions stating no relation/value (counted wrong): {report.unreadable_predictions}"]
    if report.missing:
        lines.append(f"records without a prediction (left out, partial scoring): {len(report.missing)}")
    return "\n".join(lines)
