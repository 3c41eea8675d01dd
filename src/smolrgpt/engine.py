"""The inference engine behind `ask`, `predict`, `serve` and the Python API.

Load once; encode each frame once (vision encoder, connectors and refiners) and reuse its features for
every question about it; batch questions (left padding) across frames; stop each answer at its end token;
turn the answer text into a category and a normalized answer with the deterministic normaliser.

    engine = SmolRGPT.load("ckpt")
    frame = engine.frame("rgb.png", depth="depth.png")
    answer = engine.ask(frame, "How far is the pallet <mask> from the pallet <mask>?",
                        [Region("box", [10, 20, 90, 80]), Region("rle", rle_dict)])
    answer.text, answer.category, answer.normalized_answer
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smolrgpt.data.sample import Region
from smolrgpt.errors import SampleError
from smolrgpt.modeling.region import mask_pool
from smolrgpt.processing.images import ImageDecodeError, image_size_of
from smolrgpt.processing.regions import RegionDecodeError

_frame_ids = itertools.count()


@dataclass
class Frame:
    """One RGB-D frame, preprocessed; its encoder features are computed on first use and kept."""

    id: str
    image_size: tuple[int, int]
    pixel_values: np.ndarray
    depth_values: np.ndarray | None
    image_tokens: torch.Tensor | None = field(default=None, repr=False)  # [1, N, H]
    rgb_map: torch.Tensor | None = field(default=None, repr=False)  # [1, H, G, G]
    depth_map: torch.Tensor | None = field(default=None, repr=False)

    def needs_encoding(self, with_regions: bool) -> bool:
        return self.image_tokens is None or (with_regions and self.rgb_map is None)


@dataclass
class Question:
    frame: Frame
    text: str
    regions: list[Region] = field(default_factory=list)
    id: str | None = None


@dataclass
class Answer:
    text: str
    category: str | None
    normalized_answer: str | None
    id: str | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "answer": self.text, "category": self.category,
                "normalized_answer": self.normalized_answer}


def as_region(value) -> Region:
    """A Region from a Region, {"rle": ...}/{"box": ...}/{"polygon": ...}/{"mask": ...}, a COCO RLE dict,
    a 4-number box, a 2-D array or a mask-image path."""
    if isinstance(value, Region):
        return value
    if isinstance(value, dict):
        if "counts" in value and "size" in value:
            return Region("rle", value)
        kinds = [k for k in ("rle", "box", "polygon", "mask") if k in value]
        if len(kinds) == 1:
            return Region(kinds[0], value[kinds[0]])
        raise RegionDecodeError(f"a region dict needs exactly one of rle/box/polygon/mask, got keys {sorted(value)}")
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        return Region("box", list(value))
    if isinstance(value, (np.ndarray, str, Path)):
        return Region("mask", value)
    raise RegionDecodeError(f"cannot use a {type(value).__name__} as a region")


class SmolRGPT:
    """Spatial question answering with a SmolRGPT checkpoint."""

    def __init__(self, model, processor, device: str | torch.device = "cpu", batch_size: int = 8,
                 max_new_tokens: int = 64):
        self.model = model.eval()
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, **kwargs):
        from smolrgpt.modeling.checkpoint import load_checkpoint

        model, processor = load_checkpoint(checkpoint, device=device, dtype=dtype)
        return cls(model, processor, device=device, **kwargs)

    # -- frames ----------------------------------------------------------------------------------------
    def frame(self, image, depth=None, depth_polarity: str = "far_bright", frame_id: str | None = None) -> Frame:
        frame_id = frame_id or f"frame-{next(_frame_ids)}"
        try:
            rgb, dep = self.processor.frame_arrays(image, depth, depth_polarity)
            size = image_size_of(image)
        except ImageDecodeError as exc:
            raise SampleError(str(exc), sample_id=frame_id) from None
        return Frame(frame_id, size, rgb, dep)

    @torch.no_grad()
    def encode(self, frames: list[Frame], with_regions: bool) -> None:
        """Run the encoders for the frames that lack the needed features, several frames per pass."""
        todo = [f for f in frames if f.needs_encoding(with_regions)]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            pixels = torch.from_numpy(np.stack([f.pixel_values for f in chunk])).to(self.device)
            depth = None
            if with_regions:
                if any(f.depth_values is None for f in chunk):
                    missing = next(f.id for f in chunk if f.depth_values is None)
                    raise SampleError("questions with regions need a depth map", sample_id=missing)
                depth = torch.from_numpy(np.stack([f.depth_values for f in chunk])).to(self.device)
            features = self.model.encode_frames(pixels, depth, need_regions=with_regions)
            for i, f in enumerate(chunk):
                f.image_tokens = features.image_tokens[i:i + 1]
                if features.rgb_map is not None:
                    f.rgb_map, f.depth_map = features.rgb_map[i:i + 1], features.depth_map[i:i + 1]

    # -- questions -------------------------------------------------------------------------------------
    def ask(self, frame: Frame, question: str, regions=(), **kwargs) -> Answer:
        return self.ask_batch([Question(frame, question, [as_region(r) for r in regions])], **kwargs)[0]

    def ask_batch(self, questions: list[Question], max_new_tokens: int | None = None, normalize: bool = True,
                  **generate_kwargs) -> list[Answer]:
        answers: list[Answer] = []
        for start in range(0, len(questions), self.batch_size):
            answers.extend(self._answer_chunk(questions[start:start + self.batch_size],
                                              max_new_tokens or self.max_new_tokens, normalize, generate_kwargs))
        return answers

    def _prompt(self, q: Question):
        try:
            ids, _ = self.processor.prompt_arrays([(q.text, None)], len(q.regions), train=False)
            masks = self.processor.region_arrays(q.regions, q.frame.image_size) if q.regions else None
        except (RegionDecodeError, ImageDecodeError) as exc:
            raise SampleError(str(exc), sample_id=q.id or q.frame.id) from None
        return ids, masks

    @torch.no_grad()
    def _answer_chunk(self, chunk: list[Question], max_new_tokens: int, normalize: bool, generate_kwargs):
        prompts = [self._prompt(q) for q in chunk]
        frames = list({id(q.frame): q.frame for q in chunk}.values())
        self.encode([f for f in frames if not any(q.regions for q in chunk if q.frame is f)], with_regions=False)
        self.encode([f for f in frames if any(q.regions for q in chunk if q.frame is f)], with_regions=True)
        batch = self.processor.pad_prompts([ids for ids, _ in prompts], padding_side="left")
        input_ids, attention = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        image_tokens = torch.cat([q.frame.image_tokens for q in chunk])
        rgb, depth, rows = [], [], []
        eps = self.model.config.mask_pool_eps
        for row, (q, (_, masks)) in enumerate(zip(chunk, prompts)):
            if masks is None:
                continue
            m = torch.from_numpy(masks).to(self.device)
            index = torch.zeros(len(m), dtype=torch.long, device=self.device)
            rgb.append(mask_pool(q.frame.rgb_map, m, index, eps))
            depth.append(mask_pool(q.frame.depth_map, m, index, eps))
            rows.append(torch.full((len(m),), row, dtype=torch.long, device=self.device))
        embeds = self.model.embed_inputs(input_ids, image_tokens, torch.cat(rgb) if rgb else None,
                                         torch.cat(depth) if depth else None, torch.cat(rows) if rows else None)
        tokens = self.model.generate(input_ids, attention, inputs_embeds=embeds, max_new_tokens=max_new_tokens,
                                     eos_token_id=self.processor.eos_token_id,
                                     pad_token_id=self.processor.pad_token_id, **generate_kwargs)
        texts = self.processor.batch_decode(tokens.cpu())
        return [self._finish(q, text, normalize) for q, text in zip(chunk, texts)]

    @staticmethod
    def _finish(q: Question, text: str, normalize: bool) -> Answer:
        if not normalize:
            return Answer(text, None, None, q.id)
        from smolrgpt.evaluation.normalize import classify_question, normalize_answer

        category = classify_question(q.text)
        return Answer(text, category, normalize_answer(text, question=q.text, category=category), q.id)
