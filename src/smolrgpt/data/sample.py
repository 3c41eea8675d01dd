"""The one sample type every reader produces and the processor consumes.

Readers know about file formats; the processor knows about tensors. `Sample` is the contract between
them: paths (or arrays) for RGB and depth, the depth polarity of its source, the conversation with
`<mask>` tags, and one `Region` per tag.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

DepthPolarity = Literal["far_bright", "near_bright"]
ImageLike = Union[str, Path, np.ndarray, "Image.Image"]

MASK_TAG = "<mask>"
CATEGORIES = ("left_right", "count", "distance", "mcq")


@dataclass(frozen=True)
class Region:
    """One region prompt, in whichever form its source gave it.

    kind:
      - "rle": `data` is a COCO RLE dict {"size": [h, w], "counts": str | bytes | list[int]}
        (compressed string or uncompressed list of run lengths);
      - "mask": `data` is a 2-D array (bool/0-1/0-255) or a path to a mask image (non-zero = inside);
      - "polygon": `data` is a list of flat [x0, y0, x1, y1, ...] lists in pixel coordinates;
      - "box": `data` is [x1, y1, x2, y2] in pixel coordinates (x2, y2 exclusive, may be fractional).
    """

    kind: Literal["rle", "mask", "polygon", "box"]
    data: Any

    def __post_init__(self):
        if self.kind not in ("rle", "mask", "polygon", "box"):
            raise ValueError(f"unknown region kind {self.kind!r}")


@dataclass
class Sample:
    """One question-answer record (or one multi-turn conversation) about one RGB-D frame.

    `turns` holds (question, answer) pairs; the answer is None when unknown (test split, inference).
    Questions may contain `<image>` (dropped by the prompt builder) and `<mask>` tags; across all
    turns the k-th `<mask>` refers to `regions[k]`.
    """

    id: str
    image: ImageLike | None
    turns: list[tuple[str, str | None]]
    regions: list[Region] = field(default_factory=list)
    depth: ImageLike | None = None
    depth_polarity: DepthPolarity = "far_bright"
    category: str | None = None
    normalized_answer: str | int | float | None = None
    source: str | None = None  # "file.json" or "file.json#record 12": where to look when it is bad
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        return self.turns[0][0]

    @property
    def answer(self) -> str | None:
        return self.turns[0][1]

    def num_mask_tags(self) -> int:
        return sum(q.count(MASK_TAG) for q, _ in self.turns)

    def frame_key(self) -> str | None:
        """What identifies this sample's frame when its image and depth are files: the two paths and
        the depth polarity. None for frames held in memory."""
        files = (str, os.PathLike)
        if not isinstance(self.image, files) or not (self.depth is None or isinstance(self.depth, files)):
            return None
        return f"{Path(self.image)}|{self.depth}|{self.depth_polarity}"
