"""Which buffer did a count answer read? For each count question, the count of every buffer it names, then
whether the predicted number is the asked buffer's count, another buffer's count only, or no buffer's.

    python experiments/count_by_buffer.py --data DEMO/data/val.json --images-root DEMO/data/val/images \
        --predictions EVAL/predictions.jsonl

A buffer's count is the number of the question's pallets whose mask lies at least THRESHOLD on or within one
cell of the buffer's on the model's 64x64 mask grid (`modeling/extensions/geometry.overlap_shares`); the line
`truth among buffer counts` says how often that reproduces the true answer. Buffers are the masks named
before the word "pallet" in the question, pallets the masks after it up to the question itself ("how
many ..."), as the synthetic and Track 3 count questions phrase them; a question phrased otherwise is refused.
`random buffer` is the expected accuracy of reading a buffer drawn at random, over the questions whose
answer was some buffer's count. Prints a table, then one JSON line.

Decision: kept as a reproducible diagnostic for "Contents layer" and "Count: the choice of buffer" in
docs/research.md (oracle_regions.py's `--asked-buffer-only` uses its reading of which masks are buffers).
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

THRESHOLD = 0.175  # the share that best separates pallets in a buffer from the rest (docs/research.md, "Relation code")
GRID = 64


def buffers_and_pallets(question: str, source: str) -> tuple[int, int]:
    """How many leading masks are buffers, and how many pallets follow them."""
    head, _, rest = question.partition("pallet")
    listing = re.split(r"\b(?:how many|what is)\b", rest, maxsplit=1, flags=re.IGNORECASE)[0]
    buffers, pallets = head.count("<mask>"), listing.count("<mask>")
    if "buffer" not in head or not buffers or not pallets:
        raise SystemExit(f"{source}: cannot tell the buffer masks from the pallet masks in {question!r}")
    return buffers, pallets


def selection_kind(question: str) -> str:
    asked = question.rsplit(",", 1)[-1]
    return next((k for k in ("shelf", "left", "right") if k in asked), "middle")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="Track 3-format questions with answers")
    parser.add_argument("--images-root", required=True, type=Path)
    parser.add_argument("--predictions", required=True, type=Path, help="predictions.jsonl of `smolrgpt eval`")
    args = parser.parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image
    from tqdm import tqdm

    from smolrgpt.data import open_dataset
    from smolrgpt.modeling.extensions.geometry import overlap_shares
    from smolrgpt.processing.regions import region_to_grid

    predicted = {}
    for line in args.predictions.read_text().splitlines():
        row = json.loads(line)
        predicted[row["id"]] = row.get("normalized_answer")
    totals, kinds = collections.Counter(), collections.defaultdict(collections.Counter)
    samples = open_dataset(args.data, "track3", images_root=args.images_root, validate=False)
    for sample in tqdm(samples, desc="questions", unit="question"):
        if sample.category != "count":
            continue
        if sample.normalized_answer is None:
            raise SystemExit(f"{args.data} record {sample.id}: no normalized_answer to compare with")
        if sample.id not in predicted:
            raise SystemExit(f"{args.predictions}: no prediction for record {sample.id} of {args.data}")
        n_buffers, n_pallets = buffers_and_pallets(sample.question, f"{args.data} record {sample.id}")
        with Image.open(sample.image) as image:
            size = image.size[::-1]
        masks = torch.from_numpy(np.stack([region_to_grid(r, size, GRID) for r in sample.regions]))
        shares = overlap_shares(masks, torch.zeros(len(masks), dtype=torch.long))
        pallets = range(n_buffers, n_buffers + n_pallets)
        counts = [sum(int(shares[p, b] >= THRESHOLD) for p in pallets) for b in range(n_buffers)]
        truth = int(sample.normalized_answer)
        match = re.search(r"-?\d+", str(predicted[sample.id] or ""))
        guess = int(match.group()) if match else None
        outcome = "asked buffer" if guess == truth else "other buffer" if guess in counts else "no buffer"
        for table in (totals, kinds[selection_kind(sample.question)]):
            table["questions"] += 1
            table[outcome] += 1
            table["truth among buffer counts"] += truth in counts
            if guess in counts:
                table["random buffer"] += counts.count(truth) / n_buffers
    columns = ("questions", "asked buffer", "other buffer", "no buffer", "random buffer", "truth among buffer counts")
    widths = [max(len(c), 9) + 2 for c in columns]
    print(f"{'buffer asked':<14}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
    for name, table in [("all", totals), *sorted(kinds.items())]:
        print(f"{name:<14}" + "".join(f"{table[c]:>{w}.1f}" if c == "random buffer" else f"{table[c]:>{w}}"
                                      for c, w in zip(columns, widths)))
    print(json.dumps({"all": {c: round(totals[c], 2) for c in columns},
                      **{k: {c: round(v[c], 2) for c in columns} for k, v in sorted(kinds.items())}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
