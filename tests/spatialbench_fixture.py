"""A SpatialRGPT-Bench file written the way its producer writes it (`python tests/spatialbench_fixture.py`
rewrites tests/data/spatialrgpt_bench_sample.json; test_spatialbench.py checks the two never drift).

Facts from SpatialRGPT's public OSD synthesis code (its question/answer templates and the function per
category), restated here as data: every qa category is one template function, its question and answer
are chosen among that function's phrasings with [A] = the first region and [B] = the second ("Region [0]",
"Region [1]" in the benchmark), quantities are written by `human_like_distance` as "<value rounded to 2
decimals> <unit>" with centimeters or inches under 1 m, meters or feet above, and directions as
"<int hour> o'clock". The record keys are the benchmark's: id, image_info, qa_info {type, category,
class}, conversations (human turn with one <mask> per region, gpt turn), text_q, bbox, rle, file_path.

Every answer phrasing of every category appears at least once; `EXPECTED[id]` is what the answer says
(the relation of region 0 to region 1, the length in metres as a decimal string, or the clock hour),
worked out here from the template that wrote it, not by the scorer.
"""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

OUT = Path(__file__).parent / "data" / "spatialrgpt_bench_sample.json"
A, B = "Region [0]", "Region [1]"
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above", "wide": "thin", "thin": "wide",
            "big": "small", "small": "big", "tall": "short", "short": "tall", "behind": "front", "front": "behind"}

# relation -> (questions, true answers, false answers)
PREDICATES = {
    "left": (["Is [A] to the left of [B] from the viewer's perspective?", "Does [A] appear on the left side of [B]?",
              "Can you confirm if [A] is positioned to the left of [B]?"],
             ["Yes, [A] is to the left of [B].", "Indeed, [A] is positioned on the left side of [B].",
              "Correct, you'll find [A] to the left of [B]."],
             ["No, [A] is not to the left of [B].", "In fact, [A] is to the right of [B].",
              "Incorrect, [A] is not on the left side of [B]."]),
    "right": (["Is [A] to the right of [B] from the viewer's perspective?", "Does [A] appear on the right side of [B]?",
               "Can you confirm if [A] is positioned to the right of [B]?"],
              ["Yes, [A] is to the right of [B].", "Indeed, [A] is positioned on the right side of [B].",
               "Correct, you'll find [A] to the right of [B]."],
              ["No, [A] is not to the right of [B].", "In fact, [A] is to the left of [B].",
               "Incorrect, [A] is not on the right side of [B]."]),
    "above": (["Is [A] above [B]?", "Does [A] appear over [B]?", "Can you confirm if [A] is positioned above [B]?"],
              ["Yes, [A] is above [B].", "Indeed, [A] is positioned over [B].", "Correct, [A] is located above [B]."],
              ["No, [A] is not above [B].", "Actually, [A] is below [B].",
               "Incorrect, [A] is not positioned above [B]."]),
    "below": (["Is [A] below [B]?", "Does [A] appear under [B]?", "Can you confirm if [A] is positioned below [B]?"],
              ["Yes, [A] is below [B].", "Indeed, [A] is positioned under [B].", "Correct, [A] is located below [B]."],
              ["No, [A] is not below [B].", "Actually, [A] is above [B].",
               "Incorrect, [A] is not positioned below [B]."]),
    "wide": (["Is [A] wider than [B]?", "Does [A] have a greater width compared to [B]?",
              "Can you confirm if [A] is wider than [B]?"],
             ["Yes, [A] is wider than [B].", "Indeed, [A] has a greater width compared to [B].",
              "Correct, the width of [A] exceeds that of [B]."],
             ["No, [A] is not wider than [B].", "In fact, [A] might be narrower than [B].",
              "Incorrect, [A]'s width does not surpass [B]'s."]),
    "big": (["Is [A] bigger than [B]?", "Does [A] have a larger size compared to [B]?",
             "Can you confirm if [A] is bigger than [B]?"],
            ["Yes, [A] is bigger than [B].", "Indeed, [A] has a larger size compared to [B].",
             "Correct, [A] is larger in size than [B]."],
            ["No, [A] is not bigger than [B].", "Actually, [A] might be smaller than [B].",
             "Incorrect, [A] is not larger than [B]."]),
    "tall": (["Is [A] taller than [B]?", "Does [A] have a greater height compared to [B]?",
              "Can you confirm if [A] is taller than [B]?"],
             ["Yes, [A] is taller than [B].", "Indeed, [A] has a greater height compared to [B].",
              "Correct, [A] is much taller as [B]."],
             ["No, [A] is not taller than [B].", "In fact, [A] may be shorter than [B].",
              "Incorrect, [A]'s height is not larger of [B]'s."]),
    "short": (["Is [A] shorter than [B]?", "Does [A] have a lesser height compared to [B]?",
               "Can you confirm if [A] is shorter than [B]?"],
              ["Yes, [A] is shorter than [B].", "Indeed, [A] has a lesser height compared to [B].",
               "Correct, [A] is not as tall as [B]."],
              ["No, [A] is not shorter than [B].", "In fact, [A] may be taller than [B].",
               "Incorrect, [A]'s height does not fall short of [B]'s."]),
    "thin": (["Is [A] thinner than [B]?", "Does [A] have a lesser width compared to [B]?",
              "Can you confirm if [A] is thinner than [B]?"],
             ["Yes, [A] is thinner than [B].", "Indeed, [A] has a lesser width compared to [B].",
              "Correct, [A]'s width is less than [B]'s."],
             ["No, [A] is not thinner than [B].", "In fact, [A] might be wider than [B].",
              "Incorrect, [A]'s width is not less than [B]'s."]),
    "small": (["Is [A] smaller than [B]?", "Does [A] have a smaller size compared to [B]?",
               "Can you confirm if [A] is smaller than [B]?"],
              ["Yes, [A] is smaller than [B].", "Indeed, [A] has a smaller size compared to [B].",
               "Correct, [A] occupies less space than [B]."],
              ["No, [A] is not smaller than [B].", "Actually, [A] might be larger than [B].",
               "Incorrect, [A] is not smaller in size than [B]."]),
    "behind": (["Is [A] behind [B]?", "Is the position of [A] more distant than that of [B]?", "Does [A] lie behind [B]?",
                "Is [A] positioned behind [B]?", "Is [A] further to camera compared to [B]?", "Does [A] come behind [B]?",
                "Is [A] positioned at the back of [B]?", "Is [A] further to the viewer compared to [B]?"],
               ["Yes.", "Yes, it is.", "Yes, it is behind [B].", "That is True.",
                "Yes, [A] is further from the viewer.", "Yes, [A] is behind [B]."],
               # the producer's last false answer states the opposite of its verdict; the verdict is the truth
               ["No.", "No, it is not.", "No, it is in front of [B].", "That is False.",
                "No, [A] is closer to the viewer.", "No, [B] is in front of [A]."]),
    "front": (["Is [A] in front of [B]?", "Is the position of [A] less distant than that of [B]?",
               "Does [A] lie in front of [B]?", "Is [A] positioned in front of [B]?",
               "Is [A] closer to camera compared to [B]?", "Does [A] come in front of [B]?",
               "Is [A] positioned before [B]?", "Is [A] closer to the viewer compared to [B]?"],
              ["Yes.", "Yes, it is.", "Yes, it is in front of [B].", "That is True.",
               "Yes, [A] is closer to the viewer.", "Yes, [A] is in front of [B]."],
              ["No.", "No, it is not.", "No, it is behind [B].", "That is False.",
               "No, [A] is further to the viewer.", "No, [A] is behind [B]."]),
}
# relation -> (questions, answers naming the chosen region [X])
CHOICES = {
    "left": (["Which is more to the left, [A] or [B]?",
              "Between [A] and [B], which one appears on the left side from the viewer's perspective?",
              "Who is positioned more to the left, [A] or [B]?"],
             ["[X] is more to the left.", "From the viewer's perspective, [X] appears more on the left side.",
              "Positioned to the left is [X]."]),
    "right": (["Which is more to the right, [A] or [B]?",
               "Between [A] and [B], which one appears on the right side from the viewer's perspective?",
               "Who is positioned more to the right, [A] or [B]?"],
              ["[X] is more to the right.", "From the viewer's perspective, [X] appears more on the right side.",
               "Positioned to the right is [X]."]),
    "above": (["Which is above, [A] or [B]?", "Between [A] and [B], which one is positioned higher?",
               "Who is higher up, [A] or [B]?"],
              ["[X] is above.", "Positioned higher is [X].", "[X] is higher up."]),
    "below": (["Which is below, [A] or [B]?", "Between [A] and [B], which one is positioned lower?",
               "Who is lower down, [A] or [B]?"],
              ["[X] is below.", "Positioned lower is [X].", "[X] is lower down."]),
    "tall": (["Who is taller, [A] or [B]?", "Between [A] and [B], which one has more height?",
              "Which of these two, [A] or [B], stands taller?"],
             ["[X] is taller.", "With more height is [X].", "Standing taller between the two is [X]."]),
    "short": (["Who is shorter, [A] or [B]?", "Between [A] and [B], which one has less height?",
               "Which of these two, [A] or [B], stands shorter?"],
              ["[X] is shorter.", "With less height is [X].", "Standing shorter between the two is [X]."]),
}
# category -> (regions, questions, answers with [X] the quantity)
QUANTITIES = {
    "distance_data": (2, ["What is the distance between [A] and [B]?", "How far apart are [A] and [B]?",
                          "How close is [A] from [B]?", "Measure the distance between [A] and [B]."],
                      ["[X]", "[A] and [B] are [X] apart.", "[A] is [X] away from [B].",
                       "A distance of [X] exists between [A] and [B].", "[A] is [X] from [B].",
                       "[A] and [B] are [X] apart from each other.", "They are [X] apart.",
                       "The distance of [A] from [B] is [X]."]),
    "vertical_distance_data": (2, ["What is the vertical distance between [A] and [B]?",
                                   "How far apart are [A] and [B] vertically?",
                                   "Measure the distance between [A] and [B] vertically."],
                               ["[X]", "[A] and [B] are [X] apart vertically.", "[A] is [X] away from [B] vertically.",
                                "A vertical distance of [X] exists between [A] and [B].",
                                "[A] is [X] from [B] vertically.", "[A] and [B] are [X] apart vertically from each other.",
                                "Vertically, They are [X] apart.", "The vertical distance of [A] from [B] is [X].",
                                "They are [X] apart.", "It is approximately [X]."]),
    "horizontal_distance_data": (2, ["What is the horizontal distance between [A] and [B]?",
                                     "How far is [A] from [B] horizontally?", "Horizontal gap between [A] and [B]."],
                                 ["[X]", "[A] and [B] are [X] apart horizontally.",
                                  "[A] is [X] away from [B] horizontally.",
                                  "A horizontal distance of [X] exists between [A] and [B].",
                                  "[A] is [X] from [B] horizontally.",
                                  "[A] and [B] are [X] apart horizontally from each other.",
                                  "Horizontally, They are [X] apart.", "The horizontal distance of [A] from [B] is [X].",
                                  "They are [X] apart.", "It is approximately [X]."]),
    "width_data": (1, ["Measure the width of [A].", "How wide is [A]?", "What is the radius of [A]?"],
                   ["[X]", "The width of [A] is [X].", "[A] is [X] wide.", "[A] is [X] in width.", "It is [X]."]),
    "height_data": (1, ["Measure the height of [A].", "How tall is [A]?", "How much space does [A] occupy vertically?"],
                    ["[X]", "The height of [A] is [X].", "[A] is [X] tall.", "[A] is [X] in height.", "It is [X]."]),
}
DIRECTION = (["If you are at [A], where will you find [B]?"],
             ["[B] is roughly at [X] o'clock from [A].", "[A] will find [B] around the [X] o'clock direction."])
# human_like_distance's units: (unit word, factor from metres it multiplies by, metres per unit for reading)
UNITS = [("centimeters", "100", "0.01"), ("inches", "39.3701", "0.0254"), ("meters", "1", "1"),
         ("feet", "3.28084", "0.3048")]
METRES = ["0.37", "0.82", "1.45", "2.6", "4.18", "7.93"]
HEIGHT, WIDTH = 480, 640
CLASSES = [["chair", "table"], ["car", "tree"], ["person", "bicycle"], ["lamp", "sofa"]]


def _fill(template: str, x: str = "") -> str:
    return template.replace("[A]", A).replace("[B]", B).replace("[X]", x)


def _quantity(k: int) -> tuple[str, Decimal]:
    """The k-th length as the producer writes it ("1.45 meters", "57.09 inches") and what it reads as."""
    metres = Decimal(METRES[k % len(METRES)])
    small = metres < 1
    unit, factor, back = UNITS[(0 if small else 2) + (k // len(METRES)) % 2]
    value = round(float(metres) * float(factor), 2)  # the producer's round(distance * factor, 2)
    return f"{value} {unit}", Decimal(repr(value)) * Decimal(back)


def _box_rle(box: list[float]) -> dict:
    """COCO compressed RLE of the box's pixels, as the benchmark stores its masks."""
    import numpy as np
    from pycocotools import mask as coco_mask

    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = 1
    encoded = coco_mask.encode(np.asfortranarray(mask))
    return {"size": [HEIGHT, WIDTH], "counts": encoded["counts"].decode()}


def _record(n: int, category: str, qa_type: str, question: str, answer: str, regions: int) -> dict:
    rid = f"{n:04d}_{category}"
    path = f"omni3d/images/{n:06d}.jpg"
    masked = question.replace(A, "<mask>").replace(B, "<mask>")
    boxes = [[12.0 + 90 * k + n % 7, 40.5, 80.0 + 90 * k + n % 7, 210.0] for k in range(regions)]
    return {
        "id": rid,
        "image_info": {"file_path": path, "height": HEIGHT, "width": WIDTH, "dataset": "omni3d"},
        "qa_info": {"type": qa_type, "category": category, "class": CLASSES[n % len(CLASSES)][:regions]},
        "conversations": [{"from": "human", "value": "<image>\n" + masked}, {"from": "gpt", "value": answer}],
        "text_q": question,
        "bbox": boxes,
        "rle": [_box_rle(box) for box in boxes],
        "file_path": path,
    }


def build() -> tuple[list[dict], dict[str, str]]:
    records, expected = [], {}

    def add(category, qa_type, question, answer, regions, truth):
        record = _record(len(records), category, qa_type, question, answer, regions)
        records.append(record)
        expected[record["id"]] = truth

    for relation, (questions, true_answers, false_answers) in PREDICATES.items():
        for k, answer in enumerate(true_answers + false_answers):
            truth = relation if k < len(true_answers) else OPPOSITE[relation]
            add(f"{relation}_predicate", "qualitative", _fill(questions[k % len(questions)]), _fill(answer), 2, truth)
    for relation, (questions, answers) in CHOICES.items():
        for k, answer in enumerate(answers):
            for chosen in (0, 1):
                truth = relation if chosen == 0 else OPPOSITE[relation]
                add(f"{relation}_choice", "qualitative", _fill(questions[(k + chosen) % len(questions)]),
                    _fill(answer, f"Region [{chosen}]"), 2, truth)
    k = 0
    for category, (regions, questions, answers) in QUANTITIES.items():
        for j, answer in enumerate(answers):
            for _ in range(2):  # each phrasing with two units
                text, metres = _quantity(k)
                add(category, "quantitative", _fill(questions[j % len(questions)]), _fill(answer, text), regions,
                    str(metres))
                k += 1
    for j, hour in enumerate([12, 1, 3, 5, 6, 9, 10, 11]):
        answer = DIRECTION[1][j % 2]
        add("direction", "quantitative", _fill(DIRECTION[0][0]), _fill(answer, str(hour)), 2, str(hour))
    return records, expected


def render() -> str:
    records, _ = build()
    return json.dumps(records, indent=1) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {len(build()[0])} records to {OUT}")
