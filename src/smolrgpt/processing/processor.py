"""SmolRGPTProcessor: all preprocessing, saved with the model, the only path from a `Sample` to tensors.

Two steps, so training caches and inference servers can reuse the expensive part:
  prepare(sample)   -> PreparedSample (numpy arrays: resized RGB/depth, pooled-grid masks, token ids)
  collate(prepared) -> dict of batched tensors, dynamically padded (right for training, left for
                       generation), regions flattened in row order with their row index.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import ProcessorMixin

from smolrgpt.data.sample import Region, Sample
from smolrgpt.errors import CheckpointError, ConfigError, SampleError
from smolrgpt.processing.images import (ImageDecodeError, check_depth_transform, depth_transform, image_size_of,
                                        rgb_transform)
from smolrgpt.processing.prompt import IGNORE_INDEX, build_messages, encode_messages
from smolrgpt.processing.regions import RegionDecodeError, check_mask_reduction, regions_to_grid


@dataclass
class PreparedSample:
    """One sample ready for collation (all numpy, compact: masks live on the pooling grid)."""

    id: str
    input_ids: np.ndarray  # int32 [T]
    labels: np.ndarray  # int32 [T], IGNORE_INDEX outside answers
    pixel_values: np.ndarray  # float32 [3, S, S]
    depth_values: np.ndarray | None  # float32 [3, S, S]
    region_masks: np.ndarray  # float32 [R, G, G]
    frame: str | None = None  # what identifies the frame (Sample.frame_key): rows that share it can share its encoding


class SmolRGPTProcessor(ProcessorMixin):
    """Turns samples into model inputs. Settings are saved in `processor_config.json`.

    mask_reduction / depth_transform: how masks reach the pooling grid ("area" or the authors' "bilinear",
    processing/regions.py) and which depth transform the weights were trained with ("smolrgpt",
    "authors-training" or "authors-submission", processing/images.py). A processor_config.json without
    them (written before they existed) means ours: "area" and "smolrgpt".
    """

    tokenizer_class = "AutoTokenizer"

    def __init__(self, tokenizer=None, image_size: int = 256, num_image_tokens: int = 64,
                 mask_grid_size: int = 64, max_length: int = 512, mask_reduction: str = "area",
                 depth_transform: str = "smolrgpt", chat_template=None, **kwargs):
        self.image_size = int(image_size)
        self.num_image_tokens = int(num_image_tokens)
        self.mask_grid_size = int(mask_grid_size)
        self.max_length = int(max_length)
        self.mask_reduction = check_mask_reduction(mask_reduction)
        self.depth_transform = check_depth_transform(depth_transform)
        super().__init__(tokenizer, chat_template=chat_template, **kwargs)

    @classmethod
    def for_model(cls, tokenizer, config, max_length: int = 512, mask_reduction: str = "area",
                  depth_transform: str = "smolrgpt") -> "SmolRGPTProcessor":
        return cls(tokenizer, image_size=config.vision_config.image_size,
                   num_image_tokens=config.num_image_tokens, mask_grid_size=config.mask_grid,
                   max_length=max_length, mask_reduction=mask_reduction, depth_transform=depth_transform)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ConfigError as exc:  # a setting this version does not know: name the file, one line
            raise CheckpointError(f"{pretrained_model_name_or_path}/processor_config.json: {exc}") from None

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    # -- the parts of one sample ------------------------------------------------------------------------
    def frame_arrays(self, image, depth=None, polarity: str = "far_bright"):
        """Resized RGB and depth, [3, S, S] each; checks that both have the same size."""
        rgb = rgb_transform(image, self.image_size)
        if depth is None:
            return rgb, None
        rgb_size, depth_size = image_size_of(image), image_size_of(depth)
        if rgb_size != depth_size:
            raise ImageDecodeError(f"RGB is {rgb_size[0]}x{rgb_size[1]} but depth is {depth_size[0]}x{depth_size[1]}")
        return rgb, depth_transform(depth, self.image_size, polarity, self.depth_transform)

    def region_arrays(self, regions: list[Region], image_size: tuple[int, int]) -> np.ndarray:
        return regions_to_grid(regions, image_size, self.mask_grid_size, self.mask_reduction)

    def prompt_arrays(self, turns, num_regions: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
        tags = sum(q.count("<mask>") for q, _ in turns)
        if tags != num_regions:
            raise RegionDecodeError(f"the question has {tags} <mask> tag(s) but the sample has {num_regions} region(s)")
        history = list(turns)
        if not train:  # the prompt ends with an open assistant turn for the last question
            history[-1] = (history[-1][0], None)
        elif any(a is None for _, a in history):
            raise RegionDecodeError("a training sample needs an answer for every turn")
        messages = build_messages(history, self.num_image_tokens)
        ids, labels = encode_messages(self.tokenizer, messages, add_generation_prompt=not train)
        if len(ids) > self.max_length:
            raise RegionDecodeError(f"the prompt is {len(ids)} tokens, longer than max_length={self.max_length}")
        return np.asarray(ids, np.int32), np.asarray(labels, np.int32)

    def prepare(self, sample: Sample, train: bool = True) -> PreparedSample:
        """Everything for one sample; any problem raises a SampleError naming the sample and its file."""
        try:
            if sample.image is None:
                raise ImageDecodeError("the sample has no image")
            if sample.regions and sample.depth is None:
                raise ImageDecodeError("a sample with regions needs a depth map")
            input_ids, labels = self.prompt_arrays(sample.turns, len(sample.regions), train)
            rgb, depth = self.frame_arrays(sample.image, sample.depth, sample.depth_polarity)
            masks = self.region_arrays(sample.regions, image_size_of(sample.image)) if sample.regions else \
                np.zeros((0, self.mask_grid_size, self.mask_grid_size), np.float32)
        except (ImageDecodeError, RegionDecodeError) as exc:
            raise SampleError(str(exc), sample_id=sample.id, source=sample.source) from None
        return PreparedSample(sample.id, input_ids, labels, rgb, depth, masks, sample.frame_key())

    # -- batching ---------------------------------------------------------------------------------------
    def pad_prompts(self, ids: list[np.ndarray], labels: list[np.ndarray] | None = None,
                    padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad token ids (and labels) to the longest row, never to max_length, with an explicit mask."""
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        batch, longest = len(ids), max(len(x) for x in ids)
        input_ids = torch.full((batch, longest), self.pad_token_id, dtype=torch.long)
        label_ids = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((batch, longest), dtype=torch.long)
        for row, x in enumerate(ids):
            n = len(x)
            span = slice(longest - n, longest) if padding_side == "left" else slice(0, n)
            input_ids[row, span] = torch.from_numpy(np.asarray(x, dtype=np.int64))
            if labels is not None:
                label_ids[row, span] = torch.from_numpy(np.asarray(labels[row], dtype=np.int64))
            attention[row, span] = 1
        out = {"input_ids": input_ids, "attention_mask": attention}
        if labels is not None:
            out["labels"] = label_ids
        return out

    @staticmethod
    def stack_regions(region_masks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Regions of all rows flattened in row order, with the row index of each."""
        counts = [len(m) for m in region_masks]
        if not sum(counts):
            return {}
        return {"region_masks": torch.from_numpy(np.concatenate(region_masks)),
                "region_sample_index": torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))}

    def collate(self, prepared: list[PreparedSample], padding_side: str = "right",
                share_frames: bool = False) -> dict[str, torch.Tensor]:
        """A batch: prompts padded to the longest sample (right for training, left for generation).
        `share_frames`: neighbouring rows about the same frame (same `frame` key) get one copy of its pixels,
        and `frame_index` [B] says which frame each row asks about (left out when no row shares)."""
        if not prepared:
            raise ValueError("cannot collate an empty batch")
        out = self.pad_prompts([p.input_ids for p in prepared], [p.labels for p in prepared], padding_side)
        frame_index = _neighbour_frames([p.frame for p in prepared]) if share_frames else None
        if frame_index is not None and frame_index[-1] == len(prepared) - 1:
            frame_index = None  # every row has a frame of its own: the plain layout
        firsts = prepared if frame_index is None else \
            [prepared[i] for i in np.flatnonzero(np.diff(frame_index, prepend=-1))]
        out["pixel_values"] = torch.from_numpy(np.stack([p.pixel_values for p in firsts]))
        regions = self.stack_regions([p.region_masks for p in prepared])
        if regions:
            # Frames without regions need no depth features: a zero map keeps the batch rectangular.
            zeros = np.zeros_like(prepared[0].pixel_values)
            out["depth_values"] = torch.from_numpy(
                np.stack([p.depth_values if p.depth_values is not None else zeros for p in firsts]))
            out.update(regions)
        if frame_index is not None:
            out["frame_index"] = torch.from_numpy(frame_index)
        return out

    def __call__(self, samples: list[Sample], train: bool = True, padding_side: str | None = None):
        prepared = [self.prepare(s, train=train) for s in samples]
        return self.collate(prepared, padding_side or ("right" if train else "left"))

    def decode(self, token_ids) -> str:
        """Generated ids -> answer text (stops at the end-of-answer token, drops special tokens)."""
        ids = [int(t) for t in token_ids]
        if self.eos_token_id in ids:
            ids = ids[: ids.index(self.eos_token_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def batch_decode(self, sequences) -> list[str]:
        return [self.decode(row) for row in sequences]


def _neighbour_frames(keys: list[str | None]) -> np.ndarray:
    """[B] int64: 0-based frame number of each row, a new number wherever the key changes (None: its own)."""
    new = [i == 0 or k is None or k != keys[i - 1] for i, k in enumerate(keys)]
    return np.cumsum(new, dtype=np.int64) - 1
