"""Can the language model learn a question category when the region vectors are perfect?

Trains the demo's stage 3 on one category of a finished `smolrgpt demo` folder, with the pooled region
vectors either as the model computes them (`--oracle none`) or replaced by an oracle code of each mask's
true image x (`x`), optionally with a one-hot of the mask's 0-based index in the question (`x+index`), or
by the model's own region geometry code (modeling/extensions/geometry.py) in their place (`geometry-only`) or added
to them (`geometry`: a copy of the starting checkpoint with the "geometry" region extension added;
`contents` starts from a copy of the checkpoint with the learned "contents" extension added, its output at
zero, and the vectors as the model computes them; `contents+comparisons` adds the "comparisons" extension
too, or alone where the checkpoint has contents already).
`--asked-buffer-only` (count) keeps, of each count question's buffer masks, only the buffer the question
asks about (named in the record's answer), in the training and validation questions alike: the choice of
buffer is made for the model, and what is left is reading how many pallets stand in it.
It prints the validation accuracy at each evaluation. A language model that stays at chance even with
oracle vectors says the bottleneck is the language model (from-scratch start, size, samples seen), not the
visual features.

    python experiments/oracle_regions.py --demo runs/demo --out runs/oracle --category left_right \
        --oracle x+index --steps 600 optim.lr.language_model=3e-3

It trains with the demo's stage-3 settings (src/smolrgpt/demo/stage3.yaml), but each question once per
epoch and no lead-in; extra KEY=VALUE arguments are training-config overrides (as for `smolrgpt train`).

Decision: kept as a reproducible diagnostic for the results in docs/research.md ("The language model
is the bottleneck", "Region geometry code", "Lead-in", "Contents layer", "Comparisons layer", "Count: the
choice of buffer"). What it showed was adopted into the product with tests: the region geometry code
(the "geometry" extension, tests/test_geometry.py), the stage-3 lead-in (`data.lead_in`, tests/test_lead_in.py) and
the region contents and comparisons layers (tests/test_region_layers.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import torch

from smolrgpt.modeling.extensions.geometry import RegionGeometry, region_slots

ORACLES = ("none", "x", "x+index", "geometry-only", "geometry", "contents", "contents+comparisons")
# The region extensions each of those oracles adds to a copy of the starting checkpoint.
ADDED_LAYERS = {"geometry": ("geometry",), "contents": ("contents",), "contents+comparisons": ("contents", "comparisons")}
X_FREQUENCIES = 8  # sin/cos pairs of the centroid x: 16 channels
MAX_INDEX = 16


def oracle_region_features(mode: str):
    """A replacement for `SmolRGPTForConditionalGeneration.get_region_features`, the model's one region
    pooling entry point (patched on the class only in this diagnostic process: the library has no hook for
    it on purpose, since answers must come from the model)."""

    def get_region_features(self, masks, sample_index, *unused, **unused_keywords):  # the frames: not needed
        if mode == "geometry-only":
            zero = torch.zeros(len(masks), self.config.text_config.hidden_size)
            return RegionGeometry()(zero, zero, masks, sample_index, self)
        grid = masks.shape[-1]
        area = masks.sum((1, 2)).clamp_min(1e-6)
        x = (masks.sum(1) * torch.arange(grid, dtype=masks.dtype)).sum(1) / area / grid
        angles = x[:, None] * torch.arange(1, X_FREQUENCIES + 1, dtype=x.dtype) * math.pi
        vectors = torch.zeros(len(x), self.config.text_config.hidden_size, dtype=x.dtype)
        vectors[:, :2 * X_FREQUENCIES] = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
        if mode == "x+index":
            index = region_slots(sample_index).clamp_max(MAX_INDEX - 1)
            vectors[torch.arange(len(x)), 2 * X_FREQUENCIES + index] = 1.0
        table = self.get_input_embeddings().weight
        # The mask tokens' own embeddings mark the positions as regions (the spliced vectors replace them).
        return (vectors + table[self.config.mask_rgb_token_id], vectors + table[self.config.mask_depth_token_id])

    return get_region_features


def with_added_layers(init: Path, out: Path, options: tuple[str, ...]) -> Path:
    """A copy of checkpoint `init` in `out` with the region extensions `options` added ("contents", ...): a layer
    `init` lacks is new (its output starts at zero, so the copy answers as `init` does) and everything else
    is `init`'s."""
    from smolrgpt.modeling.checkpoint import save_checkpoint
    from smolrgpt.modeling.config import SmolRGPTConfig
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.processing.processor import SmolRGPTProcessor

    if not (out / "config.json").is_file():
        config = SmolRGPTConfig.from_pretrained(init)
        config.region_extensions = config.region_extensions + [o for o in options if o not in config.region_extensions]
        torch.manual_seed(0)  # the new layer's random init, so that a rerun starts from the same copy
        model = SmolRGPTForConditionalGeneration.from_pretrained(init, config=config)
        save_checkpoint(model, SmolRGPTProcessor.from_pretrained(init), out)
    return out


def keep_asked_buffer(record: dict, source: str) -> dict:
    """A count record with only the asked buffer's mask left of its buffer masks (answer regions renumbered)."""
    from count_by_buffer import buffers_and_pallets  # the one reading of which masks are buffers

    question, answer = record["conversations"][0]["value"], record["conversations"][1]["value"]
    buffers, _ = buffers_and_pallets(question, f"{source} record {record['id']}")
    named = [b for b in range(buffers) if f"[Region {b}]" in answer]
    if len(named) != 1:
        raise SystemExit(f"{source} record {record['id']}: the answer names buffers {named}, not one")
    keep = [i for i in range(len(record["rle"])) if i >= buffers or i == named[0]]
    pieces = question.split("<mask>")
    text = pieces[0]
    for i, piece in enumerate(pieces[1:]):
        if i in keep:
            text += "<mask>" + piece
        elif piece.strip():  # a dropped tag takes its separating space with it, never words
            text += piece
    new_index = {old: new for new, old in enumerate(keep)}

    def renumber(answer_text: str) -> str:
        return re.sub(r"\[Region (\d+)\]", lambda m: f"[Region {new_index[int(m.group(1))]}]", answer_text)

    out = dict(record, rle=[record["rle"][i] for i in keep])
    out["conversations"] = [{**record["conversations"][0], "value": re.sub(r" {2,}", " ", text)},
                            {**record["conversations"][1], "value": renumber(answer)}]
    if "freeform_answer" in record:
        out["freeform_answer"] = renumber(record["freeform_answer"])
    return out


def write_split(demo: Path, out: Path, split: str, category: str, asked_buffer_only: bool = False) -> int:
    """OUT/split.json with one category's questions; OUT/split links to the demo's frames (Track 3 layout)."""
    source = demo / "data" / f"{split}.json"
    records = [r for r in json.loads(source.read_text()) if r.get("category") == category]
    if not records:
        raise SystemExit(f"{source}: no {category!r} questions")
    if asked_buffer_only:
        records = [keep_asked_buffer(r, str(source)) for r in records]
    target, text = out / f"{split}.json", json.dumps(records)
    if not target.exists() or target.read_text() != text:  # rewriting would invalidate the cache built from it
        target.write_text(text)
    link = out / split
    if not link.exists():
        link.symlink_to((demo / "data" / split).resolve(), target_is_directory=True)
    return len(records)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", required=True, type=Path, help="a finished `smolrgpt demo` folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for the filtered split and the run")
    parser.add_argument("--category", default="left_right")
    parser.add_argument("--oracle", choices=ORACLES, default="x")
    parser.add_argument("--init", default=None, help="starting checkpoint (default: the demo's stage-1 best)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--asked-buffer-only", action="store_true",
                        help="count questions keep only the asked buffer's mask of their buffer masks")
    args, overrides = parser.parse_known_args(argv)
    if args.asked_buffer_only and args.category != "count":
        parser.error("--asked-buffer-only applies to --category count")
    from smolrgpt.cli import main as cli
    from smolrgpt.data import open_dataset
    from smolrgpt.processing.cache import build_cache
    from smolrgpt.data.sample import CATEGORIES
    from smolrgpt.demo.config import STAGE_CONFIGS
    from smolrgpt.modeling import model as modeling
    from smolrgpt.processing.processor import SmolRGPTProcessor

    for split in ("train", "val"):
        if not (args.demo / "data" / f"{split}.json").is_file():
            raise SystemExit(f"{args.demo}: no data/{split}.json; --demo takes a `smolrgpt demo` output folder")
    init = Path(args.init or args.demo / "runs" / "stage1" / "best")
    if not (init / "config.json").is_file():
        raise SystemExit(f"{init}: not a checkpoint folder (no config.json); pass one with --init")
    processor = SmolRGPTProcessor.from_pretrained(str(init))  # the cache takes the starting model's image settings
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = {split: write_split(args.demo, args.out, split, args.category, args.asked_buffer_only)
             for split in ("train", "val")}
    for split in sizes:
        source = args.out / f"{split}.json"
        build_cache(open_dataset(source, "track3"), source, processor, args.out / f"cache_{split}")
    if args.oracle in ADDED_LAYERS:
        init = with_added_layers(init, args.out / f"init_{args.oracle}", ADDED_LAYERS[args.oracle])
    elif args.oracle != "none":
        modeling.SmolRGPTForConditionalGeneration.get_region_features = oracle_region_features(args.oracle)
    run = args.out / f"run_{args.oracle}"
    start = time.perf_counter()
    code = cli(["train", str(STAGE_CONFIGS[2]), f"model.init={init}",
                f"data.train={args.out / 'train.json'}", f"data.val={args.out / 'val.json'}",
                f"data.train_cache={args.out / 'cache_train'}", f"data.val_cache={args.out / 'cache_val'}",
                f"schedule.max_steps={args.steps}", "schedule.epochs=100000", f"train.output_dir={run}",
                f"train.eval_every={args.eval_every}", f"checkpoint.save_every={args.eval_every}",
                "train.accuracy_samples=1000", "logging.tensorboard=false",
                # one category only: the demo's per-category repeats and lead-in would name absent categories
                *(f"data.category_repeats.{c}=1.0" for c in CATEGORIES), "data.lead_in.share=0",
                "data.lead_in.min_steps=0", *overrides])
    if code:
        return code
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["type"] == "eval"]
    print(f"\n{args.category}: {sizes['train']} train / {sizes['val']} val questions, oracle={args.oracle}"
          f"{', asked buffer only' if args.asked_buffer_only else ''}, "
          f"{os.cpu_count()} CPUs, {time.perf_counter() - start:.0f} s")
    print(f"{'step':>6}{'val loss':>10}{'accuracy':>10}")
    for r in evals:
        print(f"{r['step']:>6}{r['val_loss']:>10.4f}{r['accuracy'][args.category]:>10.3f}")
    print(json.dumps({"category": args.category, "oracle": args.oracle,
                      "asked_buffer_only": args.asked_buffer_only, "train_questions": sizes["train"],
                      "val_questions": sizes["val"], "overrides": overrides,
                      "accuracy": {r["step"]: round(r["accuracy"][args.category], 4) for r in evals}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
