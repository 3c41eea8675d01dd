"""The rule-based answer normaliser and question classifier: a held-out corpus, the real train sample,
the behaviours it promises one by one, and the `smolrgpt normalize` command."""
from __future__ import annotations

import json
import os
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from smolrgpt.cli import main
from smolrgpt.evaluation.normalize import (
    UNANSWERABLE,
    canonical_text,
    classify_question,
    normalize_answer,
    parse_quantity,
    short_answer,
)
from smolrgpt.evaluation.score import is_correct, is_valid_prediction

CORPUS = Path(__file__).parent / "data" / "normalizer_corpus.jsonl"
TRACK3_DIR = Path(os.environ.get("SMOLRGPT_TRACK3_DIR",
                                 Path(__file__).resolve().parents[2] / "shared" / "data" / "track3"))
TRAIN_SAMPLE = TRACK3_DIR / "train_sample.json"
REQUIRED_AGREEMENT = 0.995


def _corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def _canonical(category: str, value) -> str:
    """The normaliser's output format for a ground-truth value of any type (6.36 -> "6.36", 2 -> "2")."""
    if category == "distance":
        return f"{Decimal(str(value)):.2f}"
    if category == "count":
        return str(int(float(value)))
    return str(value).strip().lower()


def _listing(failures: list[str], total: int, what: str) -> str:
    rate = 1 - len(failures) / total
    return f"{what}: {total - len(failures)}/{total} agree ({rate:.2%}), need {REQUIRED_AGREEMENT:.1%}:\n" + \
        "\n".join(failures)


# --------------------------------------------------------------------------- the held-out corpus
def test_corpus_is_large_varied_and_well_formed():
    rows = _corpus()
    assert len(rows) >= 300
    per_category = Counter(r["category"] for r in rows)
    assert set(per_category) == {"left_right", "count", "distance", "mcq"}
    assert min(per_category.values()) >= 60, per_category
    assert len({(r["question"], r["answer"]) for r in rows}) == len(rows), "duplicate lines"
    for number, row in enumerate(rows, start=1):
        assert set(row) == {"question", "answer", "category", "normalized_answer"}, number
        assert row["normalized_answer"] == _canonical(row["category"], row["normalized_answer"]), number


def test_corpus_category_agreement():
    rows = _corpus()
    failures = [f"  line {n}: expected {r['category']}, got {classify_question(r['question'])} | {r['question']!r}"
                for n, r in enumerate(rows, start=1) if classify_question(r["question"]) != r["category"]]
    assert len(failures) <= (1 - REQUIRED_AGREEMENT) * len(rows), _listing(failures, len(rows), "categories")


def test_corpus_answer_agreement():
    rows = _corpus()
    failures = []
    for n, r in enumerate(rows, start=1):
        got = normalize_answer(r["answer"], r["question"], r["category"])
        if got != r["normalized_answer"]:
            failures.append(f"  line {n} ({r['category']}): expected {r['normalized_answer']!r}, got {got!r} | "
                            f"Q: {r['question']!r} | A: {r['answer']!r}")
    assert len(failures) <= (1 - REQUIRED_AGREEMENT) * len(rows), _listing(failures, len(rows), "answers")


def test_corpus_answers_are_scored_correct_by_the_official_rule():
    # the normaliser's formats are what the scorer expects (e.g. "0.00" for a zero distance)
    for r in _corpus():
        assert is_correct(r["category"], r["normalized_answer"], normalize_answer(r["answer"], r["question"]))


def test_short_answers_read_back_as_the_normalized_answer():
    # the training targets of data.answer_target=normalized: every corpus question has one
    rows = _corpus()
    for n, r in enumerate(rows, start=1):
        text = short_answer(r["normalized_answer"], r["question"], r["category"])
        assert text is not None and len(text) <= 6, (n, text)
        assert normalize_answer(text, r["question"], r["category"]) == r["normalized_answer"], (n, text)
    flipped = [r for r in rows if r["category"] == "left_right"
               and short_answer(r["normalized_answer"], r["question"], "left_right") != r["normalized_answer"]]
    assert flipped, "the corpus has questions about the second region"


@pytest.mark.parametrize("question, normalized, expected", [
    ("Is the pallet <mask> to the left or right of the pallet <mask>?", "left", "left"),
    ("On which side of the pallet <mask> does the pallet <mask> appear?", "left", "right"),
    ("Relative to the pallet <mask>, is the pallet <mask> on the left or on the right?", "right", "left"),
    ("How many pallets are in the buffer zone <mask>?", 3, "3"),
    ("How far is the pallet <mask> from the pallet <mask>?", "5.59", "5.59"),
    ("Which of the pallets <mask> <mask> is the leftmost?", "1", "1"),
])
def test_short_answer_is_about_the_questions_subject(question, normalized, expected):
    assert short_answer(normalized, question) == expected


def test_short_answer_is_none_when_nothing_reads_back():
    assert short_answer("several", "How many pallets are in the buffer zone <mask>?", "count") is None
    assert short_answer("up", "Is the pallet <mask> to the left or right of the pallet <mask>?") is None


# --------------------------------------------------------------------------- the real train sample
@pytest.mark.skipif(not TRAIN_SAMPLE.is_file(), reason=f"{TRAIN_SAMPLE} not found (set SMOLRGPT_TRACK3_DIR)")
def test_real_train_sample_agreement():
    records = json.loads(TRAIN_SAMPLE.read_text())
    assert len(records) == 100
    category_failures, answer_failures = [], []
    for r in records:
        question, answer = r["conversations"][0]["value"], r["conversations"][1]["value"]
        if classify_question(question) != r["category"]:
            category_failures.append(f"  {r['id']}: {classify_question(question)} != {r['category']} | {question!r}")
        got = normalize_answer(answer, question)  # category inferred, as for test.json
        if got != _canonical(r["category"], r["normalized_answer"]):
            answer_failures.append(f"  {r['id']}: {got!r} != {r['normalized_answer']!r} | {answer!r}")
    assert len(category_failures) <= 0.005 * len(records), _listing(category_failures, 100, "categories")
    assert len(answer_failures) <= 0.005 * len(records), _listing(answer_failures, 100, "answers")


# --------------------------------------------------------------------------- promised behaviours
@pytest.mark.parametrize("spelling", ["[Region 3]", "Region [3]", "region 3", "[region 3]", "REGION [ 3 ]", "pallet 3"])
def test_region_spellings_are_one_reference(spelling):
    question = "Which pallet among <mask> <mask> <mask> <mask> is the leftmost?"
    assert normalize_answer(f"The leftmost is {spelling}.", question) == "3"
    # and its digit is never read as a distance
    assert normalize_answer(f"{spelling} is 4.5 meters from [Region 0].", category="distance") == "4.50"


@pytest.mark.parametrize("text, metres", [
    ("6.36 meters", "6.36"), ("6.36 metres", "6.36"), ("6.36m", "6.36"), ("636 cm", "6.36"), ("6360 mm", "6.36"),
    ("20.9 feet", "6.37032"), ("1 ft", "0.3048"), ("12 inches", "0.3048"), ("2 yards", "1.8288"),
    ("0.012 km", "12.000"), ("1 meter 50 centimeters", "1.50"), ("1 foot 6 inches", "0.4572"),
    ("twenty-one meters", "21"), ("five and a half meters", "5.5"), ("half a metre", "0.5"),
    ("the 2nd pallet is 3 m away", "3"), ("1,250 mm", "1.250"), ("no number here", None),
])
def test_parse_quantity_in_metres(text, metres):
    value = parse_quantity(text)
    assert (value if value is None else value.normalize()) == (metres if metres is None else Decimal(metres).normalize())


@pytest.mark.parametrize("answer, expected", [
    ("The pallet [Region 4] is inside the buffer region [Region 1].", "0.00"),
    ("It is located within the buffer zone.", "0.00"),
    ("0", "0.00"), ("zero meters", "0.00"),
    ("About 6.835 m.", "6.84"),  # half-up at the third decimal
    ("The pallet [Region 0] is 5.4 meters from the pallet [Region 1]. The pallet [Region 0] is 5.4 met", "5.40"),
    ("3.5 meters (about 11.5 feet)", "3.50"),  # the metric value wins over its conversion
    ("It is far away.", UNANSWERABLE),
])
def test_distance_answers(answer, expected):
    assert normalize_answer(answer, category="distance") == expected


COUNT_Q = ("<image>\nGiven the buffer masks <mask> <mask> <mask> and pallet masks <mask> <mask> <mask> <mask> "
           "<mask> <mask>, how many pallets are in the rightmost buffer?")


@pytest.mark.parametrize("answer, expected", [
    ("The buffer region [Region 0] is filled with pallets [Region 3] [Region 8]. Therefore, the buffer area "
     "[Region 0] has two pallets.", "2"),
    ("The pallets [Region 3] [Region 4] [Region 7] are located in the buffer region [Region 2].", "3"),  # listing only
    ("Region [4] and Region [6] are inside the buffer Region [1].", "2"),  # classes from the question's masks
    ("There are no pallets in it.", "0"), ("The buffer area [Region 2] is empty.", "0"),
    ("Not a single pallet.", "0"), ("It holds a single pallet.", "1"), ("twenty-one pallets", "21"),
    ("The leftmost one holds three pallets.", "3"),  # "one" as a pronoun is not a count
    ("I don't know.", UNANSWERABLE),
])
def test_count_answers(answer, expected):
    assert normalize_answer(answer, COUNT_Q) == expected


MCQ_Q = ("Given the transporters <mask> <mask> and the pallets <mask> <mask> <mask> <mask> <mask>, which pallet "
         "is the best choice for an empty transporter to pick up?")


@pytest.mark.parametrize("answer, expected", [
    ("The transporter [Region 1] is empty. The pallet [Region 5] is the closest to transporter [Region 1], "
     "so it is the most suitable.", "5"),
    ("Among the pallet [Region 2], the pallet [Region 3], and the pallet [Region 4], the pallet [Region 3] is "
     "the best.", "3"),
    ("[Region 1] is empty; [Region 6] is closest to [Region 1].", "6"),  # transporter known from the question
    ("Not [Region 2]: the best is [Region 4].", "4"),
    ("six", "6"), ("The answer is 3.", "3"), ("No idea.", UNANSWERABLE),
])
def test_mcq_answers(answer, expected):
    assert normalize_answer(answer, MCQ_Q) == expected


@pytest.mark.parametrize("question, answer, expected", [
    ("Does the pallet <mask> appear on the right-hand side of the pallet <mask>?", "Yes, it does.", "right"),
    ("Does the pallet <mask> appear on the right-hand side of the pallet <mask>?", "No, it is to the left.", "left"),
    ("Does the pallet <mask> appear on the right-hand side of the pallet <mask>?", "No.", "left"),
    ("Is the pallet <mask> to the left of the pallet <mask>?", "That's right.", "left"),
    ("Is the pallet <mask> to the left of the pallet <mask>?", "The pallet [Region 1] is to the left of the "
     "pallet [Region 0].", "right"),  # named the other way round
    ("Is the pallet <mask> to the left of the pallet <mask>?", "It is not on the left.", "right"),
    ("Which side of the pallet <mask> is the pallet <mask> on?", "The left side.", "right"),  # subject is region 1
    ("Is the pallet <mask> left or right of the pallet <mask>?", "Yes.", UNANSWERABLE),
])
def test_left_right_answers_are_the_relation_of_the_first_region(question, answer, expected):
    result = normalize_answer(answer, question)
    assert result == expected
    assert result not in ("yes", "no")


@pytest.mark.parametrize("question, category", [
    ("Could you measure the distance between the pallet <mask> and the pallet <mask>?", "distance"),
    ("How many meters separate the pallet <mask> and the pallet <mask>?", "distance"),
    ("Using the buffer masks <mask> <mask> <mask> and pallet masks <mask> <mask>, how many pallets are situated "
     "in the buffer region closest to the shelf on the right?", "count"),
    ("Considering the transporters <mask> <mask> and the pallets <mask> <mask>, which pallet is the optimal "
     "choice for an empty transporter to pick up?", "mcq"),
    ("From this viewpoint, does the pallet <mask> appear on the right-hand side of the pallet <mask>?", "left_right"),
    ("Which side of the pallet <mask> is the pallet <mask> on?", "left_right"),
    ("Identify the leftmost pallet among <mask> <mask> <mask>.", "mcq"),
    ("", "distance"),  # no cue at all: the most frequent category
])
def test_classify_question(question, category):
    assert classify_question(question) == category


def test_unanswerable_sentinel_is_scored_wrong_in_every_category():
    for category, truth in (("distance", 0), ("count", 0), ("mcq", "0"), ("left_right", "left")):
        assert not is_correct(category, truth, UNANSWERABLE)
        assert not is_valid_prediction(category, UNANSWERABLE)


def test_normalize_answer_needs_a_question_or_a_category():
    with pytest.raises(ValueError, match="needs the question or the category"):
        normalize_answer("3 meters")
    with pytest.raises(ValueError, match="unknown category 'size'"):
        normalize_answer("3 meters", category="size")
    assert normalize_answer("   ", category="count") == UNANSWERABLE


def test_canonical_text_keeps_pronoun_one():
    assert "the leftmost one" in canonical_text("The leftmost one has one pallet")
    assert canonical_text("The leftmost one has one pallet").endswith("has 1 pallet")


# --------------------------------------------------------------------------- CLI
def _write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_normalize_round_trip(tmp_path, capsys):
    source = _write_lines(tmp_path / "in.jsonl", [
        {"id": "a", "question": "How far is the pallet <mask> from the pallet <mask>?",
         "answer": "The pallet [Region 0] is 636 cm from the pallet [Region 1]."},
        "",
        {"id": "b", "question": "How many pallets are in the left buffer?", "answer": "Three.", "category": "count",
         "normalized_answer": "stale"},
        {"id": "c", "question": "Is the pallet <mask> to the left of the pallet <mask>?", "answer": "No."},
        {"id": "d", "question": "Which pallet is leftmost?", "answer": "I cannot tell."},
    ])
    target = tmp_path / "out" / "normalized.jsonl"
    assert main(["normalize", "--in", str(source), "--out", str(target)]) == 0
    assert f"normalized 4 answer(s) from {source} -> {target} (1 unanswerable)" in capsys.readouterr().out
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["id"], r["category"], r["normalized_answer"]) for r in rows] == [
        ("a", "distance", "6.36"), ("b", "count", "3"), ("c", "left_right", "right"), ("d", "mcq", UNANSWERABLE)]
    assert rows[0]["answer"] == "The pallet [Region 0] is 636 cm from the pallet [Region 1]."  # input kept
    # an existing category is kept (and used) even when the question would say otherwise
    _write_lines(source, [{"question": "How far apart are they?", "answer": "2", "category": "count"}])
    assert main(["normalize", "--in", str(source), "--out", str(source)]) == 0  # in place
    assert json.loads(source.read_text()) == {"question": "How far apart are they?", "answer": "2",
                                              "category": "count", "normalized_answer": "2"}
    assert [p.name for p in source.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("bad_line, message", [
    ('{"question": "How far?", "answer": ', "line 2 is not valid JSON"),
    ('["a list"]', "line 2 is a JSON list, expected an object"),
    ('{"question": "How far?"}', "line 2 has no string 'answer'"),
    ('{"answer": "3"}', "line 2 needs a string 'question' (or a 'category')"),
    ('{"question": "How far?", "answer": "3", "category": "size"}', "line 2 has unknown category 'size'"),
])
def test_cli_normalize_malformed_line_names_file_and_line(tmp_path, capsys, bad_line, message):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"question": "How far?", "answer": "3 m"}) + "\n" + bad_line + "\n")
    target = tmp_path / "out.jsonl"
    assert main(["normalize", "--in", str(source), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"in {source}:2: {message}" in err
    assert not target.exists()  # nothing half-written


@pytest.mark.parametrize("answer, normalized, expected", [
    ("From this viewpoint, the buffer region [Region 0] is the rightmost buffer region. The buffer region "
     "[Region 0] is filled with pallets [Region 9] [Region 3]. Therefore, the buffer area [Region 0] has two "
     "pallets.", 2, "[Region 0]: [Region 3] [Region 9], 2 pallets"),
    # a shelf named first, without a class word before it, is neither the buffer nor a pallet
    ("Of the two shelves, [Region 10] is the one on the left. The buffer area [Region 1] is nearest to the "
     "shelf [Region 10]. The pallet [Region 6] is located in the buffer region [Region 1]. Hence, there is one "
     "pallet in the buffer area [Region 1].", "1", "[Region 1]: [Region 6], 1 pallet"),
    ("The buffer region [Region 2] is the leftmost buffer region. No pallets are inside the buffer region "
     "[Region 2]. So the buffer area [Region 2] holds zero pallets.", 0, "[Region 2]: 0 pallets"),
])
def test_reasoned_count_answers_name_the_buffer_and_list_its_pallets(answer, normalized, expected):
    from smolrgpt.evaluation.normalize import reasoned_count_answer

    question = ("<image>\nUsing the buffer masks <mask> <mask> <mask> and pallet masks " + "<mask> " * 7
                + "and the shelves <mask> <mask>, how many pallets are in the buffer nearest to the left shelf?")
    text = reasoned_count_answer(answer, normalized, question)
    assert text == expected
    assert normalize_answer(text, question, "count") == str(normalized)


def test_a_count_answer_that_lists_another_number_of_pallets_has_no_reasoned_form():
    from smolrgpt.evaluation.normalize import reasoned_count_answer

    question = "<image>\nGiven the buffer regions <mask> <mask> and the pallets <mask> <mask>, how many pallets are in the left buffer?"
    listed_two = "The buffer region [Region 0] is the leftmost. It holds pallets [Region 2] [Region 3]. So two pallets."
    assert reasoned_count_answer(listed_two, 3, question) is None
    assert reasoned_count_answer("There are two pallets [Region 2] [Region 3].", 2, question) is None  # no buffer
    assert reasoned_count_answer(listed_two, "two", question) is None
