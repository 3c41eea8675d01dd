"""The demo's evaluation and report: the trained model on the validation split next to chance baselines
scored by the same scorer, training curves across the three stages, and the printed summary."""
from __future__ import annotations

import json
from pathlib import Path

from smolrgpt.atomic import write_json_atomic, write_text_atomic
from smolrgpt.data.sample import CATEGORIES

MODEL_ROW = "SmolRGPT (this run)"


def comparison_table(reports: dict, counts: dict[str, int]) -> str:
    """Per-category accuracy (%) of each system, one row per system, with the question counts."""
    head = f"{'':<22}" + "".join(f"{c:>12}" for c in CATEGORIES) + f"{'final':>10}"
    lines = [head, f"{'questions':<22}" + "".join(f"{counts.get(c, 0):>12}" for c in CATEGORIES)]
    for name, r in reports.items():
        cells = "".join(f"{r['categories'][c]:>12.2f}" if r["categories"].get(c) is not None else f"{'-':>12}"
                        for c in CATEGORIES)
        lines.append(f"{name:<22}{cells}{r['final']:>10.2f}")
    return "\n".join(lines)


def plot_training_curves(runs: Path, path: Path) -> Path | None:
    """Loss of the three stages on one step axis (validation loss as points) and stage 3's validation
    accuracy per category against step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from smolrgpt.training.monitor import read_metrics

    figure = Figure(figsize=(12, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    loss_axes, acc_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    offset, drawn = 0, False
    for stage in (1, 2, 3):
        metrics = runs / f"stage{stage}" / "metrics.jsonl"
        if not metrics.is_file():
            continue
        records = read_metrics(metrics)
        train = [r for r in records if r.get("type") == "train"]
        evals = [r for r in records if r.get("type") == "eval"]
        if not train:
            continue
        drawn = True
        line, = loss_axes.plot([offset + r["step"] for r in train], [r["loss"] for r in train], lw=0.8,
                               label=f"stage {stage} train")
        points = [r for r in evals if r.get("val_loss") is not None]
        loss_axes.plot([offset + r["step"] for r in points], [r["val_loss"] for r in points], "o",
                       color=line.get_color(), label=f"stage {stage} validation")
        if stage == 3:
            for category in CATEGORIES:
                xs = [offset + r["step"] for r in evals if (r.get("accuracy") or {}).get(category) is not None]
                ys = [100 * r["accuracy"][category] for r in evals if (r.get("accuracy") or {}).get(category) is not None]
                if xs:
                    acc_axes.plot(xs, ys, "o-", label=category)
        offset += train[-1]["step"]
        loss_axes.axvline(offset, color="#999", lw=0.6)
    if not drawn:
        return None
    loss_axes.set(xlabel="optimizer step (stages one after another)", ylabel="loss per answer token",
                  yscale="log", title="training loss")
    loss_axes.legend(fontsize=7)
    acc_axes.set(xlabel="optimizer step", ylabel="accuracy on validation questions (%)", ylim=(0, 105),
                 title="stage 3: accuracy during training")
    if acc_axes.lines:
        acc_axes.legend(fontsize=8)
    for axes in (loss_axes, acc_axes):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def evaluate_demo(demo) -> dict:
    """Answer the validation split with the exported model (resumable), score it and the baselines."""
    from smolrgpt.data import open_dataset
    from smolrgpt.demo.baselines import constant_predictions, random_predictions
    from smolrgpt.engine import SmolRGPT
    from smolrgpt.evaluation.summary import write_evaluation
    from smolrgpt.evaluation.predict import predict
    from smolrgpt.evaluation.score import score_submission

    e = demo.config.eval
    out = demo.out / "eval"
    val_file = demo.data_dir / "val.json"
    samples = list(open_dataset(val_file, "track3"))
    engine = SmolRGPT.load(demo.out / "model", precision=e.precision, batch_size=e.batch_size,
                           max_new_tokens=e.max_new_tokens)
    result = predict(engine, samples, out, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                     progress=demo.progress)
    val_records = json.loads(val_file.read_text())
    train_records = json.loads((demo.data_dir / "train.json").read_text())
    gt = [{"id": r["id"], "category": r["category"], "normalized_answer": r["normalized_answer"]} for r in val_records]
    model = score_submission(gt, [{"id": r["id"], "normalized_answer": r["normalized_answer"]} for r in result.rows])
    reports = {MODEL_ROW: model.to_dict(),
               "constant answers": score_submission(gt, constant_predictions(val_records, train_records)).to_dict(),
               "random answers": score_submission(
                   gt, random_predictions(val_records, train_records, demo.config.data.seed)).to_dict()}
    counts = {c: sum(r["category"] == c for r in val_records) for c in CATEGORIES}
    table = comparison_table(reports, counts)
    write_evaluation(samples, result.rows, out, "synthetic validation split", e.gallery, headline=table)
    curves = plot_training_curves(demo.runs, demo.out / "training_curves.png")
    write_json_atomic(demo.out / "scores.json", {"counts": counts, "reports": reports}, indent=1)
    write_text_atomic(demo.out / "scores.txt", table + "\n")
    return {"table": table, "final": model.final, "categories": model.categories,
            "curves": str(curves) if curves else None, "ask": example_question(demo, val_records)}


def example_question(demo, val_records: list[dict]) -> str:
    """A ready `smolrgpt ask` command about a validation frame: its regions go to OUT/example_regions.json."""
    import shlex

    record = next((r for r in val_records if r["category"] == "left_right"), val_records[0])
    write_json_atomic(demo.out / "example_regions.json", record["rle"])
    stem = Path(record["image"]).stem
    question = next(t["value"] for t in record["conversations"] if t["from"] == "human")
    return (f"smolrgpt ask --model {shlex.quote(str(demo.out / 'model'))} "
            f"--image {shlex.quote(str(demo.data_dir / 'val' / 'images' / record['image']))} "
            f"--depth {shlex.quote(str(demo.data_dir / 'val' / 'depths' / f'{stem}_depth.png'))} "
            f"--rle {shlex.quote(str(demo.out / 'example_regions.json'))} {shlex.quote(question)}")


def print_summary(out: Path, state: dict) -> dict:
    phases = state["phases"]
    evaluation = phases.get("evaluate", {})
    seconds = sum(p["seconds"] for p in phases.values())
    print()
    print(f"SmolRGPT demo: accuracy (%) on the synthetic validation split, {seconds / 60:.1f} min in all")
    print(evaluation.get("table", "(no evaluation yet)"))
    print()
    print("per phase (s): " + ", ".join(f"{name} {p['seconds']:.0f}" for name, p in phases.items()))
    model = out / "model"
    print(f"model:     {model}")
    print(f"scores:    {out / 'scores.txt'} (and .json)")
    print(f"curves:    {out / 'training_curves.png'}")
    print(f"report:    {out / 'eval' / 'report.txt'}, {out / 'eval' / 'scores.png'}, "
          f"{out / 'eval' / 'distance_errors.png'}")
    print(f"gallery:   {out / 'eval' / 'gallery' / 'index.html'}, {out / 'eval' / 'gallery' / 'gallery.png'}")
    if evaluation.get("ask"):
        print(f"ask it:    {evaluation['ask']}")
    print(f"serve it:  smolrgpt serve --model {model}")
    return {"seconds": seconds, "final": evaluation.get("final"), "categories": evaluation.get("categories"),
            "model": str(model)}
