"""Chance baselines scored on the same split as the model: what answering without looking gives.

- constant: one answer per category, the most frequent training answer (the median distance);
- random: left/right by a fair coin, a count and a distance drawn from the training answers, a region
  drawn uniformly from the question's own masks.
Both are submissions in the Track 3 format, scored by the same scorer as the model's predictions.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from smolrgpt.data.sample import MASK_TAG


def _answers(train_records: list[dict], category: str) -> list:
    return [r["normalized_answer"] for r in train_records if r.get("category") == category]


def constant_answers(train_records: list[dict]) -> dict[str, object]:
    """The constant answer of each category present in the training records."""
    out: dict[str, object] = {}
    for category in ("left_right", "count", "mcq"):
        values = _answers(train_records, category)
        if values:
            out[category] = Counter(values).most_common(1)[0][0]
    distances = _answers(train_records, "distance")
    if distances:
        out["distance"] = round(float(np.median(np.asarray(distances, dtype=float))), 2)
    return out


def constant_predictions(records: list[dict], train_records: list[dict]) -> list[dict]:
    answer = constant_answers(train_records)
    return [{"id": r["id"], "normalized_answer": answer.get(r["category"])} for r in records]


def _mask_count(record: dict) -> int:
    question = next((t["value"] for t in record.get("conversations", []) if t.get("from") == "human"), "")
    return max(question.count(MASK_TAG), 1)


def random_predictions(records: list[dict], train_records: list[dict], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    pools = {c: _answers(train_records, c) for c in ("count", "distance")}
    out = []
    for r in records:
        category = r["category"]
        if category == "left_right":
            answer = ("left", "right")[int(rng.integers(2))]
        elif category == "mcq":
            answer = int(rng.integers(_mask_count(r)))
        elif pools.get(category):
            answer = pools[category][int(rng.integers(len(pools[category])))]
        else:
            answer = None
        out.append({"id": r["id"], "normalized_answer": answer})
    return out
