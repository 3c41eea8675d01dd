"""How well can a distance answer be read off what the model is given, and what does the missing metric
depth scale cost?

On the two-region distance questions of a synthetic split (`smolrgpt synth` / `smolrgpt demo` data, whose
scene files hold each frame's depth planes and camera), small MLP probes are fitted to the answer (log1p
of metres) on training-split questions and scored on the validation split as the Track 3 metric scores
distances (within +-10%), from:
- geometry: each mask's exact centroid (x, y), mean relative depth under it and log area; what a model
  reading the masks and the 8-bit relative depth map perfectly would know;
- geometry + the frame's depth scale: the same plus the depth PNG's near and far planes in metres and the
  camera's horizontal field of view, which the model is never given;
- region vectors: the model's pooled RGB and depth vectors of the two regions (what fills `<mask_rgb>` /
  `<mask_depth>`).
next to the median training answer. Probes are trained with a fixed seed and step count; they measure
what is present, not what the language model learns.

    python experiments/distance_ceiling.py --train DEMO/data/train.json --val DEMO/data/val.json \
        --model DEMO/model --fit-questions 4000

Decision: kept as a reproducible diagnostic for "Distance needs a metric scale" in docs/research.md;
nothing was adopted (no input holds the scale, so the product has nothing to add).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from region_probe import load_model, region_features  # noqa: E402


def scene_scale(sample) -> list[float]:
    """[near m, far m, horizontal field of view in degrees] from the frame's scene file."""
    image = Path(str(sample.image))
    scene = image.parent.parent / "scenes" / f"{image.stem}.json"
    if not scene.is_file():
        raise SystemExit(f"question {sample.id}: no scene file {scene} (this benchmark needs `smolrgpt synth` data)")
    data = json.loads(scene.read_text())
    return [data["depth_png"]["near_m"], data["depth_png"]["far_m"], data["camera"]["hfov_deg"]]


def distance_questions(path: str, limit: int | None) -> list:
    from smolrgpt.data import open_dataset

    chosen = [s for s in open_dataset(path)
              if s.category == "distance" and len(s.regions) == 2 and s.normalized_answer is not None]
    if not chosen:
        raise SystemExit(f"{path}: no two-region distance question with an answer")
    return chosen[:limit]


def probe_inputs(model, processor, samples) -> dict[str, np.ndarray]:
    rows = region_features(model, processor, samples)
    by_sample: dict[int, list] = {}
    for row in rows:
        by_sample.setdefault(row[4], []).append(row)
    vectors, geometry = [], []
    for index in range(len(samples)):
        pair = by_sample[index]
        vectors.append(np.concatenate([r[0] for r in pair]))
        geometry.append([value for r in pair for value in (r[1], r[5], r[2], r[3])])
    geometry = np.array(geometry, np.float32)
    return {"geometry": geometry,
            "geometry + depth scale": np.hstack([geometry, np.array([scene_scale(s) for s in samples], np.float32)]),
            "region vectors": np.stack(vectors).astype(np.float32),
            "answer": np.log1p(np.array([float(s.normalized_answer) for s in samples], np.float32))}


def within_ten_percent(predicted_log1p: np.ndarray, truth_log1p: np.ndarray) -> float:
    predicted, truth = np.expm1(predicted_log1p), np.expm1(truth_log1p)
    return round(100 * float((np.abs(predicted - truth) <= 0.1 * np.abs(truth)).mean()), 2)


def fit_mlp(train_x, train_y, test_x, steps: int, seed: int = 0) -> np.ndarray:
    """Full-batch AdamW on a 2-hidden-layer MLP over standardised inputs; predictions for test_x."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = torch.from_numpy((train_x - mu) / sd), torch.from_numpy((test_x - mu) / sd)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(a.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 256),
                              torch.nn.GELU(), torch.nn.Linear(256, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    target = torch.from_numpy(train_y)
    for _ in range(steps):
        optimizer.zero_grad()
        ((net(a)[:, 0] - target) ** 2).mean().backward()
        optimizer.step()
    with torch.no_grad():
        return net(b)[:, 0].numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="the split the probes are fitted on (DEMO/data/train.json)")
    parser.add_argument("--val", required=True, help="the split they are scored on (DEMO/data/val.json)")
    parser.add_argument("--model", required=True, help="a checkpoint folder or preset:NAME")
    parser.add_argument("--fit-questions", type=int, default=4000, help="training-split questions used")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps per probe")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model, processor = load_model(args.model)
    model.eval()
    fit = probe_inputs(model, processor, distance_questions(args.train, args.fit_questions))
    test = probe_inputs(model, processor, distance_questions(args.val, None))
    median = np.full(len(test["answer"]), np.median(fit["answer"]))
    results = {"median training answer": within_ten_percent(median, test["answer"])}
    for name in tqdm(("geometry", "geometry + depth scale", "region vectors"), desc="probes", leave=False):
        predicted = fit_mlp(fit[name], fit["answer"], test[name], args.steps)
        results[name] = within_ten_percent(predicted, test["answer"])
    print(f"two-region distance questions: probes fitted on {len(fit['answer'])} ({args.train}), "
          f"scored on {len(test['answer'])} ({args.val}); % within 10%")
    for name, value in results.items():
        print(f"{name:<28}{value:>8.2f}")
    print(json.dumps({"model": args.model, "fit_questions": len(fit["answer"]), "val_questions": len(test["answer"]),
                      "steps": args.steps, "within_10_percent": results,
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
