"""Score reports of a prediction run: the Track 3 table and chart, and the files `smolrgpt eval` writes.

Imports stay light (matplotlib, the gallery and the Bench scorer only when used) so `smolrgpt score`
runs on a machine without torch.
"""
from __future__ import annotations

import os
from pathlib import Path

from smolrgpt.data.sample import CATEGORIES
from smolrgpt.evaluation.score import ScoreReport

_INVALID_SHOWN = 20  # the table lists this many invalid predictions; --json lists them all


def _pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def format_report(report: ScoreReport, title: str = "") -> str:
    lines = [f"Track 3 score{': ' + title if title else ''}", "",
             f"{'category':<14}{'accuracy %':>11}{'correct':>9}{'n':>7}"]
    for category in CATEGORIES:
        lines.append(f"{category:<14}{_pct(report.categories[category]):>11}"
                     f"{report.correct[category]:>9}{report.counts[category]:>7}")
    lines.append(f"{'final (macro)':<14}{_pct(report.final):>11}")
    lines.append("")
    lines.append(f"comparison rule: {report.rule}")
    if report.distance_mae is not None:
        abs_rel = "n/a" if report.distance_abs_rel is None else f"{report.distance_abs_rel:.3f}"
        lines.append(f"distance: mean abs error {report.distance_mae:.3f} m, mean abs-rel error {abs_rel}")
    if report.count_mae is not None:
        lines.append(f"count:    mean abs error {report.count_mae:.3f}")
    if report.invalid:
        lines.append(f"invalid predictions (counted wrong): {len(report.invalid)}")
        for record_id in report.invalid[:_INVALID_SHOWN]:
            lines.append(f"  {record_id}: {report.invalid_values[record_id]!r}")
        if len(report.invalid) > _INVALID_SHOWN:
            lines.append(f"  ... and {len(report.invalid) - _INVALID_SHOWN} more (see --json)")
    else:
        lines.append("invalid predictions: none")
    if report.partial:
        lines.append(f"partial scoring: {len(report.missing)} ground-truth id(s) not predicted, "
                     f"{len(report.extra)} predicted id(s) not in the ground truth (both ignored)")
    return "\n".join(lines)


def write_chart(report: ScoreReport, path: str | os.PathLike, title: str = "") -> None:
    """Bar chart of the four category accuracies and the final score (Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [*CATEGORIES, "final"]
    values = [report.categories[c] or 0.0 for c in CATEGORIES] + [report.final or 0.0]
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bars = axes.bar(names, values, color=["#4C72B0"] * len(CATEGORIES) + ["#DD8452"])
    for bar, value in zip(bars, values):
        axes.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value),
                      ha="center", va="bottom", fontsize=9)
    axes.set_ylim(0, 110)
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"Track 3 score{': ' + title if title else ''}")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")



def write_evaluation(samples, rows: list[dict], out: Path, title: str, gallery: int, partial: bool = False,
                     headline: str = "", rule: str = "official"):
    """Score `predict` rows against the samples' answers and write report.txt/json, the confusion tables,
    scores.png, distance_errors.png and the gallery; `headline` replaces the score table's text. Returns
    the ScoreReport."""
    from smolrgpt.atomic import write_json_atomic
    from smolrgpt.evaluation.report import (confusion, distance_histogram, format_confusion, pick_examples,
                                            write_gallery)
    from smolrgpt.evaluation.score import score_submission

    predictions = {r["id"]: r for r in rows}
    gt = [{"id": s.id, "category": s.category, "normalized_answer": s.normalized_answer} for s in samples]
    report = score_submission(gt, [{"id": r["id"], "normalized_answer": r["normalized_answer"]} for r in rows],
                              partial=partial, rule=rule)
    pairs = [(s.category, s.normalized_answer, predictions[s.id]["normalized_answer"]) for s in samples]
    text = [headline or format_report(report, title=title), "",
            format_confusion(confusion(pairs, "left_right"), "left_right"), "",
            format_confusion(confusion(pairs, "mcq"), "mcq")]
    n_hist = distance_histogram(pairs, out / "distance_errors.png")
    write_chart(report, out / "scores.png", title=title)
    page = write_gallery(pick_examples(samples, predictions, gallery), predictions, out, f"SmolRGPT on {title}")
    (out / "report.txt").write_text("\n".join(text) + "\n")
    write_json_atomic(out / "report.json", report.to_dict(), indent=1)
    print("\n".join(text))
    print(f"\nwrote {out / 'report.txt'}, {out / 'report.json'}, {out / 'scores.png'}, "
          f"{out / 'distance_errors.png'} ({n_hist} distances), {page}")
    return report


def write_bench_evaluation(samples, rows: list[dict], out: Path, title: str, partial: bool = False,
                           rule: str = "official"):
    """Score `predict` rows (their free-form `answer`) on SpatialRGPT-Bench samples; write report.txt and
    report.json (the Table 1 columns and every record's reading). Returns the BenchReport."""
    from smolrgpt.atomic import write_json_atomic, write_text_atomic
    from smolrgpt.evaluation.spatialbench import format_table, score_spatialbench

    report = score_spatialbench(samples, {r["id"]: r["answer"] for r in rows}, partial=partial, rule=rule)
    text = format_table(report, title=title)
    write_text_atomic(out / "report.txt", text + "\n")
    write_json_atomic(out / "report.json", report.to_dict(with_results=True), indent=1)
    print(text)
    print(f"\nwrote {out / 'report.txt'}, {out / 'report.json'}")
    return report
