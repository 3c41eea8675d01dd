"""Captions for the synthetic frames, in the LLaVA-CC3M-Pretrain format, for stage 1 on synthetic data.

Stage 1 aligns the RGB connector on (image, caption) pairs. The synthetic set has no captions, but its
per-frame scene files (`{split}/scenes/NNNNNN.json`, written by `smolrgpt synth`) say exactly what each
frame shows, so a caption can be derived from them: how many pallets (and how many loaded), buffer zones,
shelves and transporters are visible, on which side of the image the pallets are, and what is nearest to
and farthest from the camera.

    python -m smolrgpt.synth.captions DIR            # writes DIR/captions.json (train) and captions_val.json

Records: {"id", "image": "train/images/000012.png" (relative to DIR, where the llava reader looks by
default), "conversations": [{"from": "human", "value": "<image>\\n<instruction>"}, {"from": "gpt", ...}]}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from smolrgpt.errors import SampleError

# An object covering less of the image than this is not mentioned (the question generator's threshold).
MIN_VISIBLE_FRACTION = 0.0015
CLASSES = ("pallet", "buffer", "shelf", "transporter")
PLURAL = {"pallet": "pallets", "buffer": "buffer zones", "shelf": "shelves", "transporter": "transporters"}
SINGULAR = {"pallet": "pallet", "buffer": "buffer zone", "shelf": "shelf", "transporter": "transporter"}
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
OPENINGS = (
    "A warehouse floor with {inventory}.",
    "An elevated camera view of a storage area showing {inventory}.",
    "A storage hall with {inventory}.",
    "A view of a warehouse containing {inventory}.",
)


class SceneFormatError(SampleError):
    """A scene file lacks a field the captions are derived from."""


def _need(obj: dict, key: str, where: str, path: Path):
    if not isinstance(obj, dict) or key not in obj:
        raise SceneFormatError(f"the scene metadata has no '{where}{key}' field (needed for captions; "
                               "regenerate the set with the current `smolrgpt synth`)", source=str(path))
    return obj[key]


def count_words(n: int, cls: str) -> str:
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    return f"{word} {SINGULAR[cls] if n == 1 else PLURAL[cls]}"


def visible_objects(meta: dict, path: Path) -> list[dict]:
    """Visible objects with their image x (u) and depth along the optical axis (z), from the metadata."""
    size = _need(meta, "image_size", "", path)
    width, height = _need(size, "width", "image_size.", path), _need(size, "height", "image_size.", path)
    cam = _need(meta, "camera", "", path)
    rotation = np.asarray(_need(cam, "world_to_camera", "camera.", path), float)
    position = np.asarray(_need(cam, "position", "camera.", path), float)
    fx, cx = float(_need(cam, "fx", "camera.", path)), float(_need(cam, "cx", "camera.", path))
    out = []
    for k, obj in enumerate(_need(meta, "objects", "", path)):
        where = f"objects[{k}]."
        cls = _need(obj, "class", where, path)
        pixels = _need(obj, "visible_pixels", where, path)
        if cls not in CLASSES or pixels < MIN_VISIBLE_FRACTION * width * height:
            continue
        p = rotation @ (np.asarray(_need(obj, "center", where, path), float) - position)
        if p[2] <= 0:
            continue
        entry = {"class": cls, "u": fx * p[0] / p[2] + cx, "z": float(p[2]), "width": width}
        if cls == "pallet":
            entry["loaded"] = bool(_need(obj, "loaded", where, path))
        if cls == "transporter":
            entry["carrying"] = bool(_need(obj, "carrying", where, path))
        out.append(entry)
    return out


def _side(u: float, width: float) -> str:
    return "left" if u < width / 3 else "right" if u > 2 * width / 3 else "middle"


def caption_for(objects: list[dict], rng: np.random.Generator) -> str:
    counts = {cls: sum(o["class"] == cls for o in objects) for cls in CLASSES}
    present = [cls for cls in CLASSES if counts[cls]]
    if not present:
        return "An empty stretch of warehouse floor."
    parts = [count_words(counts[cls], cls) for cls in present]
    inventory = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    sentences = [OPENINGS[rng.integers(len(OPENINGS))].format(inventory=inventory)]
    pallets = [o for o in objects if o["class"] == "pallet"]
    if pallets:
        loaded = sum(o["loaded"] for o in pallets)
        if loaded == len(pallets):
            sentences.append("All the pallets are loaded with boxes." if len(pallets) > 1 else
                             "The pallet is loaded with boxes.")
        elif loaded == 0:
            sentences.append("The pallets are empty." if len(pallets) > 1 else "The pallet is empty.")
        else:
            word = NUMBER_WORDS[loaded].capitalize() if loaded < len(NUMBER_WORDS) else str(loaded)
            sentences.append(f"{word} of the pallets {'is' if loaded == 1 else 'are'} loaded with boxes.")
        sides = [_side(o["u"], o["width"]) for o in pallets]
        side = max(("left", "middle", "right"), key=sides.count)
        if len(pallets) > 1 and sides.count(side) * 2 > len(pallets):
            where = "in the middle of the image" if side == "middle" else f"on the {side} side of the image"
            sentences.append(f"Most pallets are {where}.")
    transporters = [o for o in objects if o["class"] == "transporter"]
    if transporters:
        carrying = sum(o["carrying"] for o in transporters)
        if len(transporters) == 1:
            sentences.append("The transporter is carrying a load." if carrying else "The transporter is empty.")
    nearest = min(objects, key=lambda o: o["z"])
    sentences.append(f"The nearest object is a {SINGULAR[nearest['class']]} on the {_side(nearest['u'], nearest['width'])}"
                     .replace("on the middle", "in the middle") + ".")
    if len(objects) > 1:
        farthest = max(objects, key=lambda o: o["z"])
        sentences.append(f"The farthest is a {SINGULAR[farthest['class']]}.")
    return " ".join(sentences)


def caption_records(root: str | Path, split: str, seed: int = 0) -> list[dict]:
    root = Path(root)
    scenes = sorted((root / split / "scenes").glob("*.json"))
    if not scenes:
        raise SampleError(f"no scene files in {root / split / 'scenes'} (write the set with `smolrgpt synth`)",
                          source=str(root))
    records = []
    for path in scenes:
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SceneFormatError(f"not valid JSON ({exc})", source=str(path)) from None
        image = _need(meta, "image", "", path)
        frame = int(_need(meta, "frame", "", path))
        rng = np.random.default_rng([seed, {"train": 0, "val": 1, "test": 2}.get(split, 3), frame])
        caption = caption_for(visible_objects(meta, path), rng)
        instruction = INSTRUCTIONS[rng.integers(len(INSTRUCTIONS))]
        records.append({"id": f"caption-{split}-{frame:06d}", "image": f"{split}/images/{image}",
                        "conversations": [{"from": "human", "value": f"<image>\n{instruction}"},
                                          {"from": "gpt", "value": caption}]})
    return records


def write_captions(root: str | Path, splits=("train", "val"), seed: int = 0) -> dict[str, Path]:
    """DIR/captions.json for train and DIR/captions_<split>.json for the others; returns the paths."""
    root = Path(root)
    written = {}
    for split in splits:
        records = caption_records(root, split, seed)
        path = root / ("captions.json" if split == "train" else f"captions_{split}.json")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(records, indent=1))
        tmp.replace(path)
        written[split] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smolrgpt.synth.captions", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a folder written by `smolrgpt synth`")
    parser.add_argument("--splits", default="train,val", help="comma-separated splits (default train,val)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the instruction/wording choice")
    args = parser.parse_args(argv)
    try:
        written = write_captions(args.root, [s.strip() for s in args.splits.split(",") if s.strip()], args.seed)
    except SampleError as exc:
        print(f"captions: error: {exc}", file=sys.stderr)
        return 2
    for split, path in written.items():
        print(f"{split}: {len(json.loads(path.read_text()))} captions -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
