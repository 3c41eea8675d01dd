"""Is the geometry a question needs present in the region vectors the language model receives?

Linear probes on the pooled region vectors (RGB and depth, what fills `<mask_rgb>` / `<mask_depth>`) of a
model, on a Track 3-layout split such as the one `smolrgpt demo` writes:
- ridge regression from one region's vectors to its mask's image x (centroid / width), its mean relative
  depth and its log area, R^2 on held-out regions;
- for left_right questions, a ridge classifier on the difference of the two regions' vectors, accuracy on
  held-out questions (the model's own answer accuracy is in the demo's report).
A high probe score next to a chance-level answer accuracy says the information reaches the language
model and it does not learn to use it.

    python experiments/region_probe.py --data runs/demo/data/val.json \
        --model preset:smolrgpt-tiny+siglip-positions preset:smolrgpt-tiny runs/demo/model

Decision: kept as a reproducible diagnostic for "Region positions survive training" in docs/research.md.
Adopted from it: the demo's stage 2 and 3 learning rates on the visual side with the encoder frozen
(src/smolrgpt/demo/stage2.yaml, stage3.yaml) and the sine-cosine position table of a randomly initialised
encoder (tests/test_model.py). distance_ceiling.py reuses its region features.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def load_model(source: str):
    """A checkpoint, `preset:NAME` (random weights) or `preset:NAME+siglip-positions` (random weights with
    the position table drawn as SigLIP's own init does, std 1/sqrt(width), instead of the sin-cos table)."""
    if source.startswith("preset:"):
        from smolrgpt.training.config import ModelSection
        from smolrgpt.training.trainer import build_initial_model

        torch.manual_seed(0)
        preset, _, variant = source.partition("+")
        model, processor = build_initial_model(ModelSection(init=preset), 512)
        if variant == "siglip-positions":
            table = model.vision_tower.embeddings.position_embedding.weight
            with torch.no_grad():
                table.normal_(0.0, table.shape[1] ** -0.5)
        elif variant:
            raise SystemExit(f"unknown variant {variant!r} (known: siglip-positions)")
        return model, processor
    from smolrgpt.modeling.checkpoint import load_checkpoint

    return load_checkpoint(source)


@torch.no_grad()
def region_features(model, processor, samples):
    """Per region: (RGB+depth vector, x, mean depth, log area, sample index, y), x and y the mask's
    centroid as a fraction of the width / height, depth the relative depth map's mean under the mask."""
    from tqdm import tqdm

    rows = []
    for index, sample in enumerate(tqdm(samples, desc="region vectors", unit="question", leave=False)):
        prepared = processor.prepare(sample, train=False)
        masks = torch.from_numpy(prepared.region_masks)
        if not len(masks):
            continue
        frames = model.get_frame_features(torch.from_numpy(prepared.pixel_values)[None],
                                          torch.from_numpy(prepared.depth_values)[None])
        rgb, depth = model.get_region_features(masks, torch.zeros(len(masks), dtype=torch.long), frames)
        grid = masks.shape[-1]
        area = masks.sum((1, 2)).clamp_min(1e-6)
        x = (masks.sum(1) * torch.arange(grid)).sum(1) / area / grid
        y = (masks.sum(2) * torch.arange(grid)).sum(1) / area / grid
        depth_map = torch.nn.functional.interpolate(torch.from_numpy(prepared.depth_values)[None, :1],
                                                    size=(grid, grid), mode="bilinear", align_corners=False)[0, 0]
        mean_depth = (masks * depth_map).sum((1, 2)) / area
        for k in range(len(masks)):
            rows.append((torch.cat([rgb[k], depth[k]]).numpy(), float(x[k]), float(mean_depth[k]),
                         float(torch.log(area[k])), index, float(y[k])))
    return rows


def ridge(train_x, train_y, test_x, strength: float):
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    w = np.linalg.solve(a.T @ a + strength * np.eye(a.shape[1]), a.T @ (train_y - train_y.mean()))
    return b @ w + train_y.mean()


def probe(model_source: str, samples, strength: float) -> dict:
    model, processor = load_model(model_source)
    model.eval()
    rows = region_features(model, processor, samples)
    features = np.stack([r[0] for r in rows])
    held_out = np.array([r[4] % 2 == 1 for r in rows])  # whole questions (and so frames' regions) held out
    result = {"model": model_source, "regions": len(rows), "dims": int(features.shape[1])}
    for name, column in (("x_r2", 1), ("depth_r2", 2), ("log_area_r2", 3)):
        y = np.array([r[column] for r in rows])
        pred = ridge(features[~held_out], y[~held_out], features[held_out], strength)
        truth = y[held_out]
        result[name] = round(float(1 - ((pred - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()), 3)
    pairs, labels, odd = [], [], []
    by_sample: dict[int, list] = {}
    for r in rows:
        by_sample.setdefault(r[4], []).append(r[0])
    for index, sample in enumerate(samples):
        if sample.category == "left_right" and len(by_sample.get(index, [])) == 2:
            first, second = by_sample[index]
            pairs.append(first - second)
            labels.append(1.0 if sample.normalized_answer == "left" else -1.0)
            odd.append(index % 2 == 1)
    if len(pairs) >= 10:
        x, y, odd = np.stack(pairs), np.array(labels), np.array(odd)
        pred = ridge(x[~odd], y[~odd], x[odd], strength)
        result["left_right_probe_accuracy"] = round(float(((pred > 0) == (y[odd] > 0)).mean()), 3)
        result["left_right_questions"] = int(odd.sum())
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a split with answers (e.g. DEMO/data/val.json)")
    parser.add_argument("--model", nargs="+", required=True,
                        help="checkpoint folders, preset:NAME (random) or preset:NAME+siglip-positions")
    parser.add_argument("--limit", type=int, default=600, help="questions read from the split")
    parser.add_argument("--strength", type=float, default=100.0, help="ridge penalty (on standardised features)")
    args = parser.parse_args(argv)
    from smolrgpt.data import open_dataset

    samples = []
    for sample in open_dataset(args.data):
        samples.append(sample)
        if len(samples) >= args.limit:
            break
    start = time.perf_counter()
    results = [probe(source, samples, args.strength) for source in args.model]
    print(f"region-vector probes on {args.data} ({len(samples)} questions, odd-numbered ones held out)")
    print(f"{'model':<40}{'x R2':>8}{'depth R2':>10}{'log area R2':>13}{'left/right acc':>16}")
    for r in results:
        print(f"{r['model'][-40:]:<40}{r['x_r2']:>8.3f}{r['depth_r2']:>10.3f}{r['log_area_r2']:>13.3f}"
              f"{r.get('left_right_probe_accuracy', float('nan')):>16.3f}")
    print(json.dumps({"data": args.data, "seconds": round(time.perf_counter() - start, 1), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
