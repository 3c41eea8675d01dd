"""Evaluation reports: confusion tables, the distance error histogram and a gallery of examples (an HTML
page and one PNG sheet)."""
from __future__ import annotations

import html
import random
from collections import Counter
from pathlib import Path
from typing import Any

from smolrgpt.data.sample import CATEGORIES, Sample
from smolrgpt.evaluation.score import is_correct, is_valid_prediction, mcq_choice, side_of

INVALID = "invalid"


def confusion(rows: list[tuple[str, Any, Any]], category: str) -> dict[str, Counter]:
    """{truth: Counter(prediction)} for left_right (left/right/invalid) or mcq (region index/invalid)."""
    read = side_of if category == "left_right" else mcq_choice
    table: dict[str, Counter] = {}
    for cat, truth, pred in rows:
        if cat != category:
            continue
        key = read(truth) or str(truth)
        table.setdefault(key, Counter())[read(pred) if is_valid_prediction(cat, pred) else INVALID] += 1
    return table


def format_confusion(table: dict[str, Counter], title: str) -> str:
    if not table:
        return f"{title}: no questions"
    def order(v):
        return (v == INVALID, int(v) if v.isdigit() else v)
    truths = sorted(table, key=order)
    preds = sorted({p for c in table.values() for p in c}, key=order)
    width = max(7, *(len(p) + 2 for p in preds))
    lines = [f"{title} (rows: truth, columns: prediction)",
             f"{'':<8}" + "".join(f"{p:>{width}}" for p in preds)]
    for t in truths:
        lines.append(f"{t:<8}" + "".join(f"{table[t][p]:>{width}}" for p in preds))
    return "\n".join(lines)


def distance_histogram(rows: list[tuple[str, Any, Any]], path: Path) -> int:
    """Histogram of signed relative distance errors with the +-10% band that scores; returns its n."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    errors = []
    for cat, truth, pred in rows:
        if cat == "distance" and is_valid_prediction(cat, pred) and float(truth) != 0:
            errors.append(max(-2.0, min(2.0, (float(pred) - float(truth)) / float(truth))))
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.hist(errors, bins=40, range=(-2, 2), color="#4C72B0")
    axes.axvspan(-0.1, 0.1, color="#55A868", alpha=0.25, label="scored correct (within 10%)")
    axes.set_xlabel("(prediction - truth) / truth, clipped to [-2, 2]")
    axes.set_ylabel("questions")
    axes.set_title(f"distance errors (n={len(errors)}, ground truth > 0)")
    axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return len(errors)


def pick_examples(samples: list[Sample], predictions: dict[str, dict], per_category: int, seed: int = 0) -> list[Sample]:
    """Up to `per_category` examples per category, half right and half wrong where possible."""
    rng = random.Random(seed)
    chosen = []
    for category in CATEGORIES:
        pool = [s for s in samples if s.category == category and s.id in predictions]
        right = [s for s in pool if is_correct(category, s.normalized_answer, predictions[s.id]["normalized_answer"])]
        wrong = [s for s in pool if s not in right]
        rng.shuffle(right)
        rng.shuffle(wrong)
        half = per_category // 2
        take = wrong[: max(half, per_category - len(right))]
        take += right[: per_category - len(take)]
        chosen.extend(take)
    return chosen


def write_gallery(samples: list[Sample], predictions: dict[str, dict], out_dir: Path, title: str) -> Path:
    """gallery/index.html with one row per example: numbered region overlay, question, prediction, truth."""
    from smolrgpt.visualize import draw_regions

    folder = out_dir / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(samples):
        image_name = f"{i:03d}.png"
        draw_regions(s.image, s.regions, max_side=640).save(folder / image_name)
        p = predictions[s.id]
        ok = is_correct(s.category, s.normalized_answer, p["normalized_answer"])
        rows.append(
            f"<tr class='{'ok' if ok else 'bad'}'><td><img src='{image_name}' width='480'></td><td>"
            f"<p><b>{html.escape(s.category or '')}</b> &middot; {html.escape(s.id)}</p>"
            f"<p><b>Q:</b> {html.escape(s.turns[-1][0])}</p>"
            f"<p><b>model:</b> {html.escape(p['answer'])}<br><b>normalized:</b> "
            f"{html.escape(str(p['normalized_answer']))}</p>"
            f"<p><b>truth:</b> {html.escape(str(s.turns[-1][1] or ''))}<br><b>normalized:</b> "
            f"{html.escape(str(s.normalized_answer))} &nbsp; {'&#10003; correct' if ok else '&#10007; wrong'}</p>"
            "</td></tr>")
    page = ("<!doctype html><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:8px;border-bottom:1px solid #ddd}"
            ".ok td:last-child{border-left:6px solid #55A868}.bad td:last-child{border-left:6px solid #C44E52}"
            "</style><h1>" + html.escape(title) + "</h1><p>Regions are numbered as in the question: the k-th "
            "&lt;mask&gt; is region k.</p><table>" + "".join(rows) + "</table>")
    (folder / "index.html").write_text(page)
    write_gallery_sheet(samples, predictions, [folder / f"{i:03d}.png" for i in range(len(samples))],
                        folder / "gallery.png")
    return folder / "index.html"


def write_gallery_sheet(samples: list[Sample], predictions: dict[str, dict], images: list[Path], path: Path,
                        columns: int = 2) -> Path | None:
    """The gallery as one PNG: each overlay with its question, the model's answer and the truth."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    if not samples:
        return None
    rows = -(-len(samples) // columns)
    figure = Figure(figsize=(11.0 * columns, 3.6 * rows), dpi=80)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows, columns * 2, width_ratios=[6, 5] * columns, wspace=0.03, hspace=0.08)
    for i, (s, image) in enumerate(zip(samples, images)):
        p = predictions[s.id]
        ok = is_correct(s.category, s.normalized_answer, p["normalized_answer"])
        row, col = divmod(i, columns)
        axes = figure.add_subplot(grid[row, 2 * col])
        axes.imshow(Image.open(image))
        axes.axis("off")
        text = figure.add_subplot(grid[row, 2 * col + 1])
        text.axis("off")
        wrap = lambda t: "\n".join(textwrap.wrap(str(t), 46)[:4])  # noqa: E731
        text.text(0, 1, f"{s.category} {'(correct)' if ok else '(wrong)'}\nQ: {wrap(s.turns[-1][0])}\n\n"
                        f"model: {wrap(p['answer'])}\n-> {p['normalized_answer']}\n\n"
                        f"truth: {s.normalized_answer}", va="top", fontsize=9, family="monospace",
                  color="#2d6a3e" if ok else "#9b2c2c")
    figure.savefig(path, format="png", bbox_inches="tight")
    return path
