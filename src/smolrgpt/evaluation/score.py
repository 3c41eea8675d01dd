"""The official AI City Challenge 2025 Track 3 score, reproduced exactly, plus the diagnostics it lacks.

Rules per category (see the Track 3 spec):
  distance    correct iff 0.90*gt <= pred <= 1.10*gt, both ends inclusive (gt == 0: only pred == 0);
  count       int(float(pred)) == int(float(gt)) (truncation, so "2.9" counts as 2);
  left_right  lower-cased, stripped, aliases folded ("l", "left side", "left-hand", ...), exact match;
  mcq         number words zero..ten become digits, then the first run of digits is compared as text.
Final score = the mean of the per-category accuracies (a macro average), in percent.

The distance bounds are compared the way the leaderboard's script does by default (rule "official":
Python floats, `pred <= 1.10 * gt and pred >= 0.90 * gt`). In binary floating point 0.90 * 4.2 is
3.7800000000000002, so a prediction of exactly 3.78 is wrong there although the rule reads
"inclusive"; rule "exact-decimal" compares the decimals as written instead and accepts it. The
SpatialRGPT-Bench scorer uses the same comparison (`within`) with its +-25% bounds.

Where we deliberately differ from the official script:
  - a prediction that cannot be read for its category (non-numeric distance or count, an mcq answer
    without digits, a left_right answer that is neither side) counts as wrong and is listed in
    `invalid`; the official script crashes on the first two.
  - mcq number words are replaced as whole words only ("often" keeps its "ten").

Nothing here imports torch or the model: the scorer must run anywhere a JSON file can be read.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Mapping

from smolrgpt.data.sample import CATEGORIES
from smolrgpt.evaluation.categories import classify_question
from smolrgpt.errors import SmolRGPTError

DISTANCE_LOW = Decimal("0.90")
DISTANCE_HIGH = Decimal("1.10")
RULES = ("official", "exact-decimal")
DEFAULT_RULE = "official"

_MCQ_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_MCQ_WORD_RE = re.compile(r"\b(" + "|".join(_MCQ_NUMBER_WORDS) + r")\b")
_DIGITS_RE = re.compile(r"\d+")
_SIDE_ALIASES = {
    alias: side
    for side in ("left", "right")
    for alias in (side[0], side, f"{side} side", f"{side}-hand", f"{side} hand")
}
_EXAMPLES_IN_ERRORS = 5


class SubmissionError(SmolRGPTError, ValueError):
    """A submission or ground-truth file cannot be scored (unreadable, missing or extra ids, ...)."""


# --------------------------------------------------------------------------- per-record rules
def _as_decimal(value: Any) -> Decimal | None:
    """The value as an exact finite decimal, or None when it is not a number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        text = repr(value)  # shortest repr: 6.36 stays 6.36, not its binary expansion
    else:
        text = str(value).strip()
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _truncated_int(value: Any) -> int | None:
    number = _as_decimal(value)
    return None if number is None else int(number)  # int() truncates toward zero, like int(float())


def mcq_choice(value: Any) -> str | None:
    if value is None:
        return None
    text = _MCQ_WORD_RE.sub(lambda m: _MCQ_NUMBER_WORDS[m.group(1)], str(value).lower())
    match = _DIGITS_RE.search(text)
    return match.group(0) if match else None


def side_of(value: Any) -> str | None:
    if value is None:
        return None
    return _SIDE_ALIASES.get(str(value).strip().lower())


def check_rule(rule: str) -> None:
    if rule not in RULES:
        raise SubmissionError(f"unknown comparison rule {rule!r} (expected one of {', '.join(RULES)})")


def within(truth: Decimal, guess: Decimal, low: Decimal, high: Decimal, rule: str = DEFAULT_RULE) -> bool:
    """low*truth <= guess <= high*truth, both ends inclusive, under `rule` (see the module docstring)."""
    if rule == "official":  # the leaderboard's expression, operand for operand, in binary floats
        pred, gt = float(guess), float(truth)
        return pred <= float(high) * gt and pred >= float(low) * gt
    check_rule(rule)
    return low * truth <= guess <= high * truth


def _check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise SubmissionError(f"unknown category {category!r} (expected one of {', '.join(CATEGORIES)})")


def is_valid_prediction(category: str, pred: Any) -> bool:
    """Whether `pred` can be read at all for this category (an unreadable prediction is always wrong)."""
    _check_category(category)
    if category == "distance":
        return _as_decimal(pred) is not None
    if category == "count":
        return _truncated_int(pred) is not None
    if category == "mcq":
        return mcq_choice(pred) is not None
    return side_of(pred) is not None


def is_correct(category: str, gt: Any, pred: Any, rule: str = DEFAULT_RULE) -> bool:
    """The official per-record rule for one answer. Never raises on a bad prediction: it is just wrong.

    `gt` and `pred` may be str, int or float (the real files mix them); `rule` is how distance bounds
    are compared ("official" binary floats, or "exact-decimal").
    """
    _check_category(category)
    if category == "distance":
        truth, guess = _as_decimal(gt), _as_decimal(pred)
        if truth is None or guess is None:
            return False
        return within(truth, guess, DISTANCE_LOW, DISTANCE_HIGH, rule)
    if category == "count":
        truth_int, guess_int = _truncated_int(gt), _truncated_int(pred)
        return truth_int is not None and truth_int == guess_int
    if category == "mcq":
        truth_choice, guess_choice = mcq_choice(gt), mcq_choice(pred)
        return truth_choice is not None and truth_choice == guess_choice
    truth_side, guess_side = side_of(gt), side_of(pred)
    return truth_side is not None and truth_side == guess_side


# --------------------------------------------------------------------------- report
@dataclass
class ScoreReport:
    """Accuracies are percentages; a category with no ground-truth record has accuracy None and is
    left out of `final`. MAE / abs-rel are over the numeric predictions only (abs-rel skips gt == 0)."""

    final: float | None
    categories: dict[str, float | None]
    counts: dict[str, int]
    correct: dict[str, int]
    distance_mae: float | None
    distance_abs_rel: float | None
    count_mae: float | None
    invalid: list[str] = field(default_factory=list)
    invalid_values: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    partial: bool = False
    rule: str = DEFAULT_RULE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GroundTruth:
    category: str
    answer: Any


def _examples(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_EXAMPLES_IN_ERRORS])
    return shown + (", ..." if len(ids) > _EXAMPLES_IN_ERRORS else "")


def _question_of(record: Mapping[str, Any]) -> str | None:
    for turn in record.get("conversations") or []:
        if isinstance(turn, Mapping) and turn.get("from") == "human":
            return str(turn.get("value", ""))
    question = record.get("question")
    return None if question is None else str(question)


def ground_truth_index(records: Iterable[Mapping[str, Any]], source: str = "ground truth") -> dict[str, GroundTruth]:
    """id -> (category, answer) from val_answers-style records or full Track 3 records.

    A record without `category` gets one inferred from its question (the classifier in normalize.py),
    which is how a test split annotated by hand can still be scored.
    """
    index: dict[str, GroundTruth] = {}
    for position, record in enumerate(records):
        if not isinstance(record, Mapping) or "id" not in record:
            raise SubmissionError(f"{source}: record {position} is not an object with an 'id'")
        record_id = str(record["id"])
        if "normalized_answer" not in record:
            raise SubmissionError(f"{source}: record {record_id!r} has no 'normalized_answer'")
        category = record.get("category")
        if category is None:
            question = _question_of(record)
            if question is None:
                raise SubmissionError(f"{source}: record {record_id!r} has neither 'category' nor a question")
            category = classify_question(question)
        if category not in CATEGORIES:
            raise SubmissionError(f"{source}: record {record_id!r} has unknown category {category!r}")
        if record_id in index:
            raise SubmissionError(f"{source}: id {record_id!r} appears more than once")
        index[record_id] = GroundTruth(category, record["normalized_answer"])
    return index


def prediction_index(records: Iterable[Mapping[str, Any]] | Mapping[str, Any],
                     source: str = "submission") -> dict[str, Any]:
    """id -> predicted normalized_answer; also accepts a plain {id: answer} mapping."""
    if isinstance(records, Mapping):
        return {str(k): v for k, v in records.items()}
    index: dict[str, Any] = {}
    for position, record in enumerate(records):
        if not isinstance(record, Mapping) or "id" not in record or "normalized_answer" not in record:
            keys = ", ".join(sorted(map(str, record))) if isinstance(record, Mapping) else type(record).__name__
            raise SubmissionError(f"{source}: record {position} needs 'id' and 'normalized_answer' (has: {keys}); "
                                  f"expected {SUBMISSION_SHAPE}")
        record_id = str(record["id"])
        if record_id in index:
            raise SubmissionError(f"{source}: id {record_id!r} appears more than once")
        index[record_id] = record["normalized_answer"]
    return index


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_submission(gt_records: Iterable[Mapping[str, Any]] | Mapping[str, GroundTruth],
                     pred_records: Iterable[Mapping[str, Any]] | Mapping[str, Any],
                     partial: bool = False, rule: str = DEFAULT_RULE) -> ScoreReport:
    """Score a submission against the ground truth with the official formula.

    Every ground-truth id must be predicted exactly once and no other id may appear, unless
    `partial` is set: then only the ids present in both are scored and the rest are reported.
    """
    check_rule(rule)
    if isinstance(gt_records, Mapping):  # already indexed by ground_truth_index
        truth = dict(gt_records)
        if not all(isinstance(v, GroundTruth) for v in truth.values()):
            raise SubmissionError("a ground-truth mapping must hold GroundTruth values (see ground_truth_index)")
    else:
        truth = ground_truth_index(gt_records)
    preds = prediction_index(pred_records)
    missing = [i for i in truth if i not in preds]
    extra = [i for i in preds if i not in truth]
    if not partial and (missing or extra):
        problems = []
        if missing:
            problems.append(f"{len(missing)} ground-truth id(s) missing from the submission ({_examples(missing)})")
        if extra:
            problems.append(f"{len(extra)} id(s) not in the ground truth ({_examples(extra)})")
        raise SubmissionError("; ".join(problems) + " (use --partial / partial=True to score the overlap)")

    counts = {c: 0 for c in CATEGORIES}
    correct = {c: 0 for c in CATEGORIES}
    errors: dict[str, list[float]] = {"distance": [], "count": []}
    rel_errors: list[float] = []
    invalid: list[str] = []
    invalid_values: dict[str, Any] = {}
    for record_id, gt in truth.items():
        if record_id not in preds:
            continue
        pred = preds[record_id]
        counts[gt.category] += 1
        if not is_valid_prediction(gt.category, pred):
            invalid.append(record_id)
            invalid_values[record_id] = pred
            continue
        correct[gt.category] += is_correct(gt.category, gt.answer, pred, rule)
        if gt.category in errors:
            truth_value, guess = _as_decimal(gt.answer), _as_decimal(pred)
            if truth_value is not None and guess is not None:
                errors[gt.category].append(abs(float(guess) - float(truth_value)))
                if gt.category == "distance" and truth_value != 0:
                    rel_errors.append(abs(float(guess) - float(truth_value)) / abs(float(truth_value)))

    accuracies = {c: (100.0 * correct[c] / counts[c] if counts[c] else None) for c in CATEGORIES}
    present = [a for a in accuracies.values() if a is not None]
    return ScoreReport(
        final=_mean(present),
        categories=accuracies,
        counts=counts,
        correct=correct,
        distance_mae=_mean(errors["distance"]),
        distance_abs_rel=_mean(rel_errors),
        count_mae=_mean(errors["count"]),
        invalid=invalid,
        invalid_values=invalid_values,
        missing=missing,
        extra=extra,
        partial=partial,
        rule=rule,
    )


# --------------------------------------------------------------------------- files
def read_text_file(path: str | Path) -> str:
    """A file's UTF-8 text; SubmissionError naming the file when it cannot be read or is not UTF-8."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SubmissionError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                              "save it as UTF-8 JSON") from None


def _shape_error(path: Path, data: Any, expected: str) -> SubmissionError:
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        got = (f"an object holding the list {lists[0]!r}" if lists
               else "an object mapping keys to values (e.g. {id: answer})")
    else:
        got = f"a JSON {type(data).__name__}"
    return SubmissionError(f"{path}: expected {expected}, got {got}")


def load_records(path: str | Path, expected: str = 'a JSON array (or JSON Lines) of objects') -> list[dict[str, Any]]:
    """A JSON array of objects, or JSON Lines (one object per line, blank lines ignored).

    `expected` describes the record shape in the error raised for any other shape.
    """
    path = Path(path)
    text = read_text_file(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        data, whole_error = None, exc
    else:
        whole_error = None
    if whole_error is None:
        if isinstance(data, dict) and "id" in data:  # JSON Lines holding a single record
            return [data]
        if not isinstance(data, list):
            raise _shape_error(path, data, expected)
        for position, record in enumerate(data):
            if not isinstance(record, dict):
                raise SubmissionError(f"{path}: element {position} is a JSON {type(record).__name__}; "
                                      f"expected {expected}")
        return data
    if text.lstrip().startswith("["):
        raise SubmissionError(f"{path}: not valid JSON (line {whole_error.lineno}: {whole_error.msg})")
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SubmissionError(f"{path}:{number}: not a JSON object ({exc.msg}); expected {expected}") from exc
        if not isinstance(record, dict):
            raise SubmissionError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    if not records:
        raise SubmissionError(f"{path}: no records (expected {expected})")
    return records


SUBMISSION_SHAPE = 'a JSON array (or JSON Lines) of {"id": ..., "normalized_answer": ...} objects'


def score_files(gt_path: str | Path, pred_path: str | Path, partial: bool = False,
                rule: str = DEFAULT_RULE) -> ScoreReport:
    truth = ground_truth_index(load_records(gt_path), source=str(gt_path))
    preds = prediction_index(load_records(pred_path, SUBMISSION_SHAPE), source=str(pred_path))
    return score_submission(truth, preds, partial=partial, rule=rule)
