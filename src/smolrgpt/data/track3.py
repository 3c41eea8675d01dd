"""Reader for AI City Challenge 2025 Track 3 (PhysicalAI-Spatial-Intelligence-Warehouse) JSON files.

Record: `{id, image, conversations: [human, gpt], rle: [{size, counts}], category, normalized_answer,
freeform_answer}`; `test.json` has only id, image, conversations (human turn only) and rle.

Paths (the data set's own layout): for `<root>/<split>.json` the RGB frame is
`<root>/<split>/images/<image>` and its depth map `<root>/<split>/depths/<stem>_depth.png`.
`images_dir` / `depths_dir` override either folder; given only `images_dir`, depths are looked for in
the `depths/` folder beside it (the same layout one level down).

Depth polarity: "far_bright" (8-bit, brighter = farther, relative scale).

Kept as in the file: the question text (`<image>` and `<mask>` tags included; the prompt builder
drops the one and expands the other), `category`, and `normalized_answer` with its own type (str, int or
float). The turn's answer is `freeform_answer` (the gpt turn when that field is absent).
Masks are kept as RLE dicts (Region "rle") and decoded only by the processor or the checker.
`answer_problem` states the normalized-answer conventions of the four categories.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

from smolrgpt.data.jsonarray import iter_json_array
from smolrgpt.data.llava import image_field, llava_turns, record_header
from smolrgpt.data.sample import MASK_TAG, Region, Sample
from smolrgpt.errors import SampleError

DEPTH_POLARITY = "far_bright"
DEPTH_SUFFIX = "_depth.png"


def depth_name(image_name: str) -> str:
    """`000190.png` -> `000190_depth.png` (the stem keeps any sub-folder of the image name)."""
    stem = image_name.rsplit(".", 1)[0] if "." in Path(image_name).name else image_name
    return stem + DEPTH_SUFFIX


def default_dirs(path: str | Path, images_dir: str | Path | None = None,
                 depths_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(images_dir, depths_dir) for a split file, following the real layout unless overridden."""
    path = Path(path)
    split_dir = path.parent / path.stem
    images = Path(images_dir) if images_dir is not None else split_dir / "images"
    if depths_dir is not None:
        depths = Path(depths_dir)
    else:
        depths = images.parent / "depths" if images_dir is not None else split_dir / "depths"
    return images, depths


def _regions(rle: Any, *, sample_id: str, source: str, validate: bool) -> list[Region]:
    if rle is None:
        return []
    if not isinstance(rle, list):
        raise SampleError(f"'rle' must be a list of {{size, counts}} objects, got {type(rle).__name__}",
                          sample_id=sample_id, source=source)
    if validate:
        for k, entry in enumerate(rle):
            if not isinstance(entry, dict) or "size" not in entry or "counts" not in entry:
                raise SampleError(f"rle[{k}] must be an object with 'size' and 'counts'",
                                  sample_id=sample_id, source=source)
    return [Region("rle", entry) for entry in rle]


def track3_record_to_sample(record: Any, index: int, *, path: str | Path, images_dir: str | Path,
                            depths_dir: str | Path, validate: bool = True) -> Sample:
    """One Track 3 record -> Sample. Raises SampleError naming the record and the file.

    `validate=False` keeps records whose tags and masks disagree (the checker reports those itself).
    """
    source, sample_id = record_header(record, index, path)
    image = image_field(record, sample_id=sample_id, source=source)
    turns = llava_turns(record.get("conversations"), sample_id=sample_id, source=source)
    if len(turns) != 1:
        raise SampleError(f"expected one question, got {len(turns)} human turns", sample_id=sample_id, source=source)
    answer = record.get("freeform_answer", turns[0][1])
    if answer is not None and not isinstance(answer, str):
        raise SampleError("'freeform_answer' must be a string", sample_id=sample_id, source=source)
    regions = _regions(record.get("rle"), sample_id=sample_id, source=source, validate=validate)
    tags = turns[0][0].count(MASK_TAG)
    if validate and tags != len(regions):
        raise SampleError(f"the question has {tags} {MASK_TAG} tags but the record has {len(regions)} masks",
                          sample_id=sample_id, source=source)
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        raise SampleError("'category' must be a string", sample_id=sample_id, source=source)
    return Sample(
        id=sample_id,
        image=Path(images_dir) / image,
        turns=[(turns[0][0], answer)],
        regions=regions,
        depth=Path(depths_dir) / depth_name(image),
        depth_polarity=DEPTH_POLARITY,
        category=category,
        normalized_answer=record.get("normalized_answer"),
        source=source,
        meta={"index": index, "format": "track3"},
    )


def iter_track3(path: str | Path, *, images_dir: str | Path | None = None, depths_dir: str | Path | None = None,
                validate: bool = True) -> Iterator[Sample]:
    """Stream the Samples of a Track 3 split file (train/val/test). Image files are not opened here."""
    path = Path(path)
    images, depths = default_dirs(path, images_dir, depths_dir)
    for index, record in iter_json_array(path):
        yield track3_record_to_sample(record, index, path=path, images_dir=images, depths_dir=depths,
                                      validate=validate)


# Answer conventions of the four categories (what `smolrgpt data check` enforces).
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_int(value: Any) -> int | None:
    """An integer given as int, integral float or digit string; None for anything else."""
    if _is_number(value) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    return None


def answer_problem(category: str, answer: Any, num_masks: int) -> str | None:
    """Why a normalized answer is invalid for its category, or None when it is fine."""
    if answer is None:
        return f"no normalized_answer for a {category} question"
    if category == "distance":
        try:
            value = float(answer) if isinstance(answer, str) else answer
        except ValueError:
            value = None
        if not _is_number(value) or not math.isfinite(value):
            return f"distance must be a number of metres, got {answer!r}"
        return None if value >= 0 else f"distance must be non-negative, got {answer!r}"
    if category == "count":
        count = _as_int(answer)
        if count is None:
            return f"count must be an integer, got {answer!r}"
        return None if count >= 0 else f"count must be non-negative, got {answer!r}"
    if category == "left_right":
        return None if answer in ("left", "right") else f"left_right must be 'left' or 'right', got {answer!r}"
    if category == "mcq":
        index = _as_int(answer)
        if index is None:
            return f"mcq must be a region index, got {answer!r}"
        return None if 0 <= index < num_masks else f"mcq region index {index} is not one of the {num_masks} masks"
    return None
