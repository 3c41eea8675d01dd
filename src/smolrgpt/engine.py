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

import contextlib
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smolrgpt.data.sample import Region
from smolrgpt.errors import SampleError
from smolrgpt.decoding import generate_from_prefixes, prefix_kv
from smolrgpt.modeling.model import FrameFeatures
from smolrgpt.modeling.region import LazyRefinedMap  # the type of a Frame's cached maps
from smolrgpt.processing.images import ImageDecodeError, image_size_of
from smolrgpt.processing.prompt import image_prefix_ids
from smolrgpt.processing.regions import RegionDecodeError, parse_region

_frame_ids = itertools.count()


@dataclass
class Frame:
    """One RGB-D frame, preprocessed; its encoder features are computed on first use and kept."""

    id: str
    image_size: tuple[int, int]
    pixel_values: np.ndarray
    depth_values: np.ndarray | None
    image_tokens: torch.Tensor | None = field(default=None, repr=False)  # [1, N, H] RGB connector output
    depth_tokens: torch.Tensor | None = field(default=None, repr=False)  # [1, N, H] depth connector output
    rgb_map: LazyRefinedMap | None = field(default=None, repr=False)
    depth_map: LazyRefinedMap | None = field(default=None, repr=False)
    prefix: list | None = field(default=None, repr=False)  # per-layer (keys, values) of the shared prefix

    def needs_encoding(self, with_regions: bool) -> bool:
        return self.image_tokens is None or (with_regions and self.depth_tokens is None)


@dataclass
class Question:
    frame: Frame
    text: str
    regions: list[Region] = field(default_factory=list)
    id: str | None = None

    def __post_init__(self):
        self.regions = [as_region(r) for r in self.regions]


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
    a 4-number box, a 2-D array or a mask-image path (processing.regions.parse_region)."""
    return parse_region(value)


class SmolRGPT:
    """Spatial question answering with a SmolRGPT checkpoint."""

    def __init__(self, model, processor, device: str | torch.device = "cpu", batch_size: int = 8,
                 max_new_tokens: int = 64, reuse_prefix: bool = True, lazy_refine: bool = True):
        """reuse_prefix: keep each frame's prompt-prefix KV cache and decode with a preallocated cache;
        lazy_refine: refine only the tokens under region masks. Both give the same answers as the plain
        path (transformers' generate on full prompts, dense refiners); they exist to be switched off for
        comparison."""
        self.model = model.eval()
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.reuse_prefix = reuse_prefix
        self.lazy_refine = lazy_refine
        self.eos_token_id = processor.eos_token_id  # benchmarks set -1 to force fixed-length answers
        self.timings: defaultdict[str, float] = defaultdict(float)  # seconds per stage, for benchmarks
        self.prefix_ids = np.asarray(image_prefix_ids(processor.tokenizer, model.config.image_token_id,
                                                      model.config.num_image_tokens))

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu", precision: str = "fp32", **kwargs):
        """precision: fp32, fp16w or int8 (fewer bytes per language-model weight, fp32 math; CPU), bf16
        (GPU), or auto: the fastest mode the accuracy gate passed (modeling/precision.py)."""
        from smolrgpt.modeling.checkpoint import load_checkpoint
        from smolrgpt.modeling.precision import apply_precision

        model, processor = load_checkpoint(checkpoint, device=device, quiet=kwargs.pop("quiet", False))
        context = model.config.text_config.max_position_embeddings
        if kwargs.get("max_new_tokens", 1) > context:  # would allocate a KV cache beyond the model's reach
            from smolrgpt.errors import ConfigError

            raise ConfigError(f"--max-new-tokens {kwargs['max_new_tokens']} is more than the model's context of "
                              f"{context} tokens")
        return cls(apply_precision(model, precision, device), processor, device=device, **kwargs)

    @contextlib.contextmanager
    def _timed(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - started

    # -- frames ----------------------------------------------------------------------------------------
    def frame(self, image, depth=None, depth_polarity: str = "far_bright", frame_id: str | None = None) -> Frame:
        frame_id = frame_id or f"frame-{next(_frame_ids)}"
        try:
            with self._timed("preprocess_s"):
                rgb, dep = self.processor.frame_arrays(image, depth, depth_polarity)
                size = image_size_of(image)
        except ImageDecodeError as exc:
            raise SampleError(str(exc), sample_id=frame_id) from None
        return Frame(frame_id, size, rgb, dep)

    @torch.no_grad()
    def encode(self, frames: list[Frame], with_regions: bool) -> None:
        """Run the encoder and connectors for the frames that lack them, several frames per pass."""
        todo = [f for f in frames if f.needs_encoding(with_regions)]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            if with_regions and any(f.depth_values is None for f in chunk):
                missing = next(f.id for f in chunk if f.depth_values is None)
                raise SampleError("questions with regions need a depth map", sample_id=missing)
            need_rgb = [f for f in chunk if f.image_tokens is None]
            need_depth = [f for f in chunk if with_regions and f.depth_tokens is None]
            with self._timed("vision_s"):
                features = self.model.get_frame_features(self._stack([f.pixel_values for f in need_rgb]),
                                                         self._stack([f.depth_values for f in need_depth]))
            for i, f in enumerate(need_rgb):
                f.image_tokens = features.image_tokens[i:i + 1]
            for i, f in enumerate(need_depth):
                f.depth_tokens = features.depth_tokens[i:i + 1]
                f.rgb_map, f.depth_map = self.model.get_region_maps(FrameFeatures(f.image_tokens, f.depth_tokens))

    def _stack(self, arrays: list[np.ndarray]) -> torch.Tensor | None:
        return torch.from_numpy(np.stack(arrays)).to(self.device) if arrays else None

    def _frame_prefix(self, frame: Frame):
        if frame.prefix is None:
            ids = torch.from_numpy(self.prefix_ids).to(self.device)[None]
            with self._timed("prefill_s"):
                embeds = self.model.embed_inputs(ids, frame.image_tokens)
                frame.prefix = prefix_kv(self.model.language_model, embeds)
        return frame.prefix

    def _region_features(self, frame: Frame, masks: torch.Tensor):
        index = torch.zeros(len(masks), dtype=torch.long, device=self.device)
        with self._timed("refiner_pool_s"):
            if self.lazy_refine:
                return self.model.get_region_features(masks, index, strategy="lazy",
                                                      maps=(frame.rgb_map, frame.depth_map))
            return self.model.get_region_features(masks, index, FrameFeatures(frame.image_tokens, frame.depth_tokens),
                                                  strategy="dense")

    # -- questions -------------------------------------------------------------------------------------
    @staticmethod
    def question(frame: Frame, text: str, regions=(), id: str | None = None) -> Question:
        """A Question for ask_batch (callers that hold an engine need not import this module)."""
        return Question(frame, text, list(regions), id)

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
        with self._timed("preprocess_s"):
            return self._prompt_arrays(q)

    def _prompt_arrays(self, q: Question):
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
        with_regions = {id(q.frame) for q in chunk if q.regions}
        self.encode([f for f in frames if id(f) not in with_regions], with_regions=False)
        self.encode([f for f in frames if id(f) in with_regions], with_regions=True)
        region_vectors = []
        for q, (ids, masks) in zip(chunk, prompts):
            vectors = (None if masks is None
                       else self._region_features(q.frame, torch.from_numpy(masks).to(self.device)))
            region_vectors.append(vectors)
        if self.reuse_prefix and all(np.array_equal(ids[:len(self.prefix_ids)], self.prefix_ids) for ids, _ in prompts):
            tokens = self._generate_with_prefix(chunk, prompts, region_vectors, max_new_tokens, generate_kwargs)
        else:
            tokens = self._generate_plain(chunk, prompts, region_vectors, max_new_tokens, generate_kwargs)
        texts = self.processor.batch_decode(tokens.cpu())
        return [self._finish(q, text, normalize) for q, text in zip(chunk, texts)]

    def _splice(self, ids_rows: list[np.ndarray], image_tokens, region_vectors, padding_side="left"):
        batch = self.processor.pad_prompts(ids_rows, padding_side=padding_side)
        input_ids, attention = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        rows = [torch.full((len(v[0]),), r, dtype=torch.long, device=self.device)
                for r, v in enumerate(region_vectors) if v is not None]
        present = [v for v in region_vectors if v is not None]
        embeds = self.model.embed_inputs(
            input_ids, image_tokens, torch.cat([v[0] for v in present]) if present else None,
            torch.cat([v[1] for v in present]) if present else None, torch.cat(rows) if rows else None)
        return input_ids, attention, embeds

    def _generate_plain(self, chunk, prompts, region_vectors, max_new_tokens, generate_kwargs):
        image_tokens = torch.cat([q.frame.image_tokens for q in chunk])
        input_ids, attention, embeds = self._splice([ids for ids, _ in prompts], image_tokens, region_vectors)
        with self._timed("generate_s"):
            return self.model.generate(input_ids, attention, inputs_embeds=embeds, max_new_tokens=max_new_tokens,
                                       min_new_tokens=max_new_tokens if self.eos_token_id < 0 else 0,
                                       eos_token_id=self.eos_token_id if self.eos_token_id >= 0 else None,
                                       pad_token_id=self.processor.pad_token_id, **generate_kwargs)

    # Two generation loops on purpose: _generate_plain is transformers' generate (the reference, every
    # sampling option); this one decodes from each frame's cached prompt-prefix KV, which generate cannot
    # take per row, and test_engine checks both give the same answers.
    def _generate_with_prefix(self, chunk, prompts, region_vectors, max_new_tokens, generate_kwargs):
        n = len(self.prefix_ids)
        suffix_ids = [ids[n:] for ids, _ in prompts]
        empty = torch.zeros(len(chunk), 0, self.model.config.text_config.hidden_size, device=self.device)
        input_ids, attention, embeds = self._splice(suffix_ids, empty, region_vectors, padding_side="right")
        suffixes = [embeds[r, :len(ids)] for r, ids in enumerate(suffix_ids)]
        return generate_from_prefixes(
            self.model.language_model, self.model.get_input_embeddings(),
            [self._frame_prefix(q.frame) for q in chunk], suffixes, max_new_tokens,
            eos_token_id=self.eos_token_id, pad_token_id=self.processor.pad_token_id, timings=self.timings,
            **generate_kwargs)

    @staticmethod
    def _finish(q: Question, text: str, normalize: bool) -> Answer:
        if not normalize:
            return Answer(text, None, None, q.id)
        from smolrgpt.evaluation.normalize import classify_question, normalize_answer

        category = classify_question(q.text)
        return Answer(text, category, normalize_answer(text, question=q.text, category=category), q.id)
