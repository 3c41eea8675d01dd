"""Training data: Samples from the readers, turned into tensors ONLY by the processor, in length-grouped
batches that are identical whatever the number of processes.

The plan of an epoch is a list of optimizer steps, each a list of sample indices (the effective batch).
It depends on the seed, the epoch and the lengths only, never on the world size: every process builds
the same plan and takes its own share of each step's micro-batches. That is what makes 2 processes x
micro-batch b train exactly like 1 process with the same global batch, and what makes resuming exact
(the data position is just (epoch, step in epoch)).

Length grouping: inside windows of `mega_batch_steps` steps, samples are sorted by token length and cut
into steps; the steps are then shuffled. Micro-batches of similar lengths pad little (collate pads to the
longest of the micro-batch, never to max_length).

Category repeats (`data.category_repeats`) change which samples an epoch holds, not how it is cut: each
sample appears floor(r) times, and of the samples sharing a fractional part f, round(f x their number)
are drawn once more without replacement, anew each epoch from the epoch's seeded generator: the epoch
length is fixed and resuming stays exact.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smolrgpt.errors import ConfigError, SampleError


# --------------------------------------------------------------------------- loading
def load_samples(path: str, format: str = "auto", images_root=None, depths_root=None,
                 limit: int | None = None) -> list:
    from smolrgpt.data import open_dataset

    samples = []
    for sample in open_dataset(path, format, images_root=images_root, depths_root=depths_root):
        samples.append(sample)
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise SampleError("no samples", source=str(path))
    return samples


def with_normalized_answers(samples: list, reasoned: bool = False) -> list:
    """Copies of single-turn samples whose answer is the short text that the answer normaliser reads as
    their `normalized_answer` (the target of `data.answer_target: normalized`; see `short_answer`); with
    `reasoned`, count answers also name the buffer and its pallets (`reasoned_count_answer`). A sample
    without a normalized answer, or whose answer no such text reads back as, is an error naming it."""
    from smolrgpt.evaluation.normalize import reasoned_count_answer, short_answer

    target = "reasoned" if reasoned else "normalized"
    out = []
    for sample in samples:
        if sample.normalized_answer is None or len(sample.turns) != 1:
            raise SampleError(f"data.answer_target={target} needs one question and a normalized_answer per "
                              "record", sample_id=sample.id, source=sample.source)
        question, record_answer = sample.turns[0]
        if reasoned and sample.category == "count":
            answer = reasoned_count_answer(record_answer or "", sample.normalized_answer, question)
            if answer is None:
                raise SampleError(f"data.answer_target=reasoned: the count answer must name a buffer and list "
                                  f"exactly {sample.normalized_answer!r} pallet(s), got {record_answer!r}",
                                  sample_id=sample.id, source=sample.source)
        else:
            answer = short_answer(sample.normalized_answer, question, sample.category)
        if answer is None:
            raise SampleError(f"data.answer_target={target}: no short answer reads back as the normalized "
                              f"answer {sample.normalized_answer!r} ({sample.category})",
                              sample_id=sample.id, source=sample.source)
        out.append(dataclasses.replace(sample, turns=[(question, answer)]))
    return out


def image_key(sample) -> str | None:
    """What identifies the image of a sample for splitting by frame: its path (or the bytes of an in-memory
    image); unlike `Sample.frame_key`, the depth map and its polarity are not part of it."""
    image = sample.image
    if isinstance(image, (str, Path)):
        return os.path.abspath(image)  # no file-system calls: cheap for 600K samples
    if isinstance(image, np.ndarray):
        return "array:" + hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
    return None


def split_by_frame(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out whole frames (every question about a held-out frame goes to validation)."""
    keys = sorted({image_key(s) or f"id:{s.id}" for s in samples})
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(fraction * len(keys))))
    if n_val >= len(keys):
        raise ConfigError(f"data.val_fraction={fraction} leaves no training frame ({len(keys)} frames)")
    held = {keys[i] for i in rng.permutation(len(keys))[:n_val]}
    train = [s for s in samples if (image_key(s) or f"id:{s.id}") not in held]
    val = [s for s in samples if (image_key(s) or f"id:{s.id}") in held]
    return train, val


def check_disjoint(train: list, val: list) -> None:
    """Validation must not contain training ids or frames (the authors' stage-1 split overlapped)."""
    ids = {s.id for s in train} & {s.id for s in val}
    if ids:
        raise ConfigError(f"{len(ids)} sample id(s) are in both the training and the validation data, "
                          f"e.g. {sorted(ids)[:3]}")
    train_frames = {image_key(s) for s in train} - {None}
    frames = {k for s in val if (k := image_key(s)) in train_frames}
    if frames:
        raise ConfigError(f"{len(frames)} frame(s) are in both the training and the validation data, "
                          f"e.g. {sorted(frames)[:3]}")


def token_lengths(samples: list, processor, skip_invalid: bool = False) -> tuple[list, np.ndarray, int]:
    """(kept samples, their prompt + answer lengths, number dropped), by tokenising only (no image is
    opened). A sample that cannot be trained on (tag/mask mismatch, too long) fails here, before any
    step is taken, or is dropped and counted with `skip_invalid`."""
    kept, lengths = [], []
    for sample in samples:
        try:
            ids, _ = processor.prompt_arrays(sample.turns, len(sample.regions), train=True)
        except ValueError as exc:
            if skip_invalid:
                continue
            raise SampleError(f"{exc} (data.skip_invalid=true drops such samples)", sample_id=sample.id,
                              source=sample.source) from None
        kept.append(sample)
        lengths.append(len(ids))
    if not kept:
        raise SampleError("no sample can be trained on")
    return kept, np.asarray(lengths, np.int64), len(samples) - len(kept)


class PreparedDataset(torch.utils.data.Dataset):
    """index -> PreparedSample, through the processor (the one path from a Sample to arrays) or through
    a preprocessing cache that holds what the processor computed (data.PreparedCache)."""

    def __init__(self, samples: list, processor, train: bool = True, cache=None):
        self.samples, self.processor, self.train = samples, processor, train
        self.prepare = cache.prepare if cache is not None else processor.prepare

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.prepare(self.samples[index], train=self.train)


def open_cache(folder: str | None, processor, source: str | None, samples: list):
    """The cache for `samples`, checked up front: every sample must be in it (a stale cache is refused)."""
    if folder is None:
        return None
    from smolrgpt.processing.cache import CacheError, PreparedCache

    try:
        cache = PreparedCache(folder, processor, source=source)
    except CacheError as exc:
        raise ConfigError(f"data cache {folder}: {exc}") from None
    missing = [s.id for s in samples if s not in cache]
    if missing:
        raise ConfigError(f"data cache {folder} lacks {len(missing)} sample(s), e.g. {missing[:3]}; "
                          "prepare it again from the same data file")
    return cache


# --------------------------------------------------------------------------- the epoch plan
def sample_repeats(samples: list, repeats, default: float = 1.0, name: str = "data.category_repeats"
                   ) -> np.ndarray | None:
    """Per-sample repeat factors from `data.category_repeats` (None when every factor is 1). `default` is
    the factor of a category left unset (and of questions without one): 0 for the lead-in's mix. Setting a
    category that no training sample has is an error, not a setting that does nothing."""
    factors = dataclasses.asdict(repeats)
    if default == 1.0 and all(v == 1.0 for v in factors.values()):
        return None
    present = {s.category for s in samples}
    absent = sorted(c for c, v in factors.items() if v != default and c not in present)
    if absent:
        raise ConfigError(f"{name} sets {', '.join(absent)}, but no training sample has that "
                          f"category (categories present: {sorted(c for c in present if c) or 'none'})")
    out = np.asarray([factors.get(s.category, default) for s in samples], np.float64)
    if epoch_size(out) == 0:
        raise ConfigError(f"{name} leaves no training sample in an epoch")
    return out


def _fraction_groups(repeats: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """(indices, extra copies) per distinct fractional part: samples sharing a factor share a draw."""
    fractions = repeats - np.floor(repeats)
    return [(np.flatnonzero(fractions == f), int(round(f * np.count_nonzero(fractions == f))))
            for f in np.unique(fractions[fractions > 0])]


def epoch_size(repeats: np.ndarray) -> int:
    return int(np.floor(repeats).sum()) + sum(extra for _, extra in _fraction_groups(repeats))


def epoch_pool(repeats: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Sample indices of one epoch under per-sample repeat factors (see the module docstring)."""
    parts = [np.repeat(np.arange(len(repeats)), np.floor(repeats).astype(np.int64))]
    for indices, extra in _fraction_groups(repeats):
        parts.append(indices[torch.randperm(len(indices), generator=generator)[:extra].numpy()])
    return np.concatenate(parts)


@dataclass(frozen=True)
class BatchPlan:
    """Optimizer steps of one epoch, split into micro-batches, the same on every process."""

    batch_size: int  # effective (global) batch
    grad_accum: int
    world_size: int
    group_by_length: bool = True
    mega_batch_steps: int = 16
    seed: int = 0
    frame_group: int = 1  # up to this many questions about one frame next to each other (see `steps`)

    def __post_init__(self):
        if self.batch_size % (self.grad_accum * self.world_size):
            raise ConfigError(f"train.batch_size ({self.batch_size}) must be a multiple of train.grad_accum x "
                              f"processes ({self.grad_accum} x {self.world_size})")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // (self.grad_accum * self.world_size)

    def steps_per_epoch(self, n: int) -> int:
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest >= self.world_size else 0)

    def steps(self, lengths: np.ndarray, epoch: int, repeats: np.ndarray | None = None,
              frames: np.ndarray | None = None) -> list[np.ndarray]:
        """The effective batches of `epoch`, in order. A last partial batch is kept when every process
        can get at least one sample of it (else those few samples wait for the next epoch's shuffle).
        `repeats`: per-sample repeat factors (`sample_repeats`), or None for every sample once.
        `frames`: per-sample frame numbers (`frame_numbers`); with `frame_group` > 1 the epoch is cut into
        units of up to that many samples of one frame, kept next to each other, so that a micro-batch
        encodes each frame once for all its questions (the processor's `share_frames`)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        pool = np.arange(len(lengths)) if repeats is None else epoch_pool(repeats, g)
        n = len(pool)
        order = pool[torch.randperm(n, generator=g).numpy()]
        by_frame = self.frame_group > 1 and frames is not None
        if by_frame:
            order = self._frame_units_order(order, lengths, frames, g)
        elif self.group_by_length:
            window = self.batch_size * self.mega_batch_steps
            chunks = []
            for start in range(0, n, window):
                block = order[start:start + window]
                # Stable sort on the shuffled block: equal lengths keep a random order.
                chunks.append(block[np.argsort(-lengths[block], kind="stable")])
            order = np.concatenate(chunks)
        steps = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if by_frame:  # two units of one frame in a step become neighbours
            steps = [step[np.argsort(frames[step], kind="stable")] for step in steps]
        if self.group_by_length and len(steps) > 1:
            # Shuffle whole steps so long and short batches alternate through the epoch.
            perm = torch.randperm(len(steps), generator=g).tolist()
            steps = [steps[i] for i in perm]
        # Dropped after the shuffle so the other steps' order is the same for every world size.
        return [s for s in steps if len(s) >= self.world_size]

    def _frame_units_order(self, order: np.ndarray, lengths: np.ndarray, frames: np.ndarray,
                           generator: torch.Generator) -> np.ndarray:
        """`order` (shuffled) as units of up to `frame_group` samples of one frame, the units in a random
        order (by longest member within each length-grouping window when `group_by_length`)."""
        by_frame = order[np.argsort(frames[order], kind="stable")]  # each frame's samples together, still shuffled
        starts = np.flatnonzero(np.diff(frames[by_frame], prepend=-1))
        ends = np.append(starts[1:], len(by_frame))
        units = [by_frame[i:min(i + self.frame_group, end)]
                 for start, end in zip(starts, ends) for i in range(start, end, self.frame_group)]
        units = [units[i] for i in torch.randperm(len(units), generator=generator).tolist()]
        if self.group_by_length:
            # sorted() is stable: units of equal longest length keep their random order
            longest_first = lambda block: sorted(block, key=lambda u: -int(lengths[u].max()))  # noqa: E731
            window, grouped, block, size = self.batch_size * self.mega_batch_steps, [], [], 0
            for unit in units:  # windows of at least `window` samples
                block.append(unit)
                size += len(unit)
                if size >= window:
                    grouped += longest_first(block)
                    block, size = [], 0
            units = grouped + longest_first(block)
        return np.concatenate(units)

    def micro_batches(self, step: np.ndarray) -> list[np.ndarray]:
        """All micro-batches of one step, in the order (accumulation a, rank r) -> a * world + r."""
        if len(step) == self.batch_size:
            return [step[i:i + self.micro_batch] for i in range(0, len(step), self.micro_batch)]
        accum = min(self.grad_accum, len(step) // self.world_size)
        return np.array_split(step, accum * self.world_size)

    def rank_micro_batches(self, step: np.ndarray, rank: int) -> list[np.ndarray]:
        return self.micro_batches(step)[rank::self.world_size]


def frame_numbers(samples: list) -> np.ndarray:
    """[N] int64: a number per distinct frame (`Sample.frame_key`; a frame held in memory is its own)."""
    numbers: dict = {}
    return np.asarray([numbers.setdefault(s.frame_key() or ("id", i), len(numbers)) for i, s in enumerate(samples)],
                      np.int64)


def padding_tokens(lengths: np.ndarray, micro_batches: list[np.ndarray]) -> int:
    """Pad tokens right-padding each micro-batch to its longest sample would add."""
    return int(sum(len(mb) * lengths[mb].max() - lengths[mb].sum() for mb in micro_batches if len(mb)))


class _RankBatches(torch.utils.data.Sampler):
    """This process's micro-batches of the remaining steps of an epoch, flattened for a DataLoader."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def epoch_loader(dataset, plan: BatchPlan, steps: list[np.ndarray], rank: int, collate, num_workers: int = 0):
    """(iterator over this rank's micro-batches, micro-batches per step) for the given steps."""
    per_step = [plan.rank_micro_batches(step, rank) for step in steps]
    flat = [mb.tolist() for mbs in per_step for mb in mbs]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_RankBatches(flat), collate_fn=collate,
                                         num_workers=num_workers, persistent_workers=False)
    return iter(loader), [len(mbs) for mbs in per_step]


def eval_batches(n: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Validation indices for this rank: contiguous shards cut into batches (no sample twice)."""
    shard = np.array_split(np.arange(n), world_size)[rank]
    return [shard[i:i + batch_size].tolist() for i in range(0, len(shard), batch_size)]
