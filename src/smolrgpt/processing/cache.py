"""A preprocessing cache: resized RGB and depth per frame and pooled-grid masks per sample, in shards.

Training reads 1080p PNGs and decodes up to 15 RLE masks per question; many questions share a frame.
The cache stores what the processor computes from them, once: RGB resized to the encoder input (uint8,
exactly what the processor's resize yields), relative depth resized (float16) and the region masks on the
pooling grid (float16), each distinct mask of a frame once per shard with each sample's row numbers into
them (a frame's questions name the same objects again and again: the demo's 60-minute set stored 3.7 GB
of masks per question). Token ids are not cached (tokenising is cheap and depends on the
prompt format). Shards are safetensors files (no pickle) written atomically; the manifest records the
source file's size and modification time, the processor settings and a SHA-256 per shard, so a stale or
corrupt cache is refused instead of trusted. An interrupted `prepare` resumes at the first missing shard.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from smolrgpt.atomic import file_sha256, write_json_atomic
from smolrgpt.data.sample import Sample
from smolrgpt.errors import SampleError, SmolRGPTError
from smolrgpt.processing.images import (ImageDecodeError, depth_normalize, depth_resized, image_size_of,
                                        rgb_normalize, rgb_resized)
from smolrgpt.processing.regions import RegionDecodeError, regions_to_grid

CACHE_VERSION = 2  # 2: masks stored once per frame and shard, samples hold row numbers
MANIFEST = "manifest.json"


class CacheError(SmolRGPTError):
    """The cache is missing, stale (source or settings changed), corrupt or incomplete."""


def cached_frame_key(sample: Sample) -> str:
    """`Sample.frame_key`, required: the cache keeps only frames stored as files."""
    key = sample.frame_key()
    if key is None:
        raise CacheError(f"sample {sample.id!r}: only frames stored as files can be cached")
    return key


def source_fingerprint(path: str | Path) -> dict:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _modes(processor) -> tuple[str, str]:
    return getattr(processor, "mask_reduction", "area"), getattr(processor, "depth_transform", "smolrgpt")


def _settings(processor) -> dict:
    settings = {"image_size": processor.image_size, "mask_grid_size": processor.mask_grid_size}
    reduction, depth = _modes(processor)
    if (reduction, depth) != ("area", "smolrgpt"):  # recorded only when not ours, so older caches stay valid
        settings.update(mask_reduction=reduction, depth_transform=depth)
    return settings


def _prepare_one(args):
    """Worker: the cached arrays of one sample (and of its frame when not cached yet)."""
    sample, need_frame, size, grid, (reduction, depth_mode) = args
    try:
        out = {}
        if need_frame:
            out["rgb"] = rgb_resized(sample.image, size)
            if sample.depth is not None:
                out["depth"] = depth_resized(sample.depth, size, sample.depth_polarity, depth_mode).astype(np.float16)
        if sample.regions:
            out["masks"] = regions_to_grid(sample.regions, image_size_of(sample.image), grid,
                                           reduction).astype(np.float16)
        return sample.id, out
    except (ImageDecodeError, RegionDecodeError) as exc:
        raise SampleError(str(exc), sample_id=sample.id, source=sample.source) from None


def build_cache(samples: Iterable[Sample], source: str | Path, processor, out_dir: str | Path,
                samples_per_shard: int = 512, jobs: int = 1, total: int | None = None, progress: bool = True) -> Path:
    """Write (or resume writing) the cache of a data file's samples."""
    from smolrgpt.atomic import claim_output

    out = Path(out_dir)
    manifest_path = out / MANIFEST
    claim_output(out, "data prepare", overwrite=False, saved={} if manifest_path.is_file() else None, settings={},
                 can_overwrite=False)
    out.mkdir(parents=True, exist_ok=True)
    expected = {"version": CACHE_VERSION, "source": source_fingerprint(source), "processor": _settings(processor),
                "samples_per_shard": samples_per_shard}
    manifest = {**expected, "shards": [], "complete": False}
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in expected} == expected:
            manifest = old  # resume
        else:
            raise CacheError(f"{out} holds a cache of other data or settings; remove it or choose another folder")
    if manifest["complete"]:
        return out
    done_shards = len(manifest["shards"])
    frame_shard: dict[str, int] = {}
    for i, shard in enumerate(manifest["shards"]):
        for key in shard["frames"]:
            frame_shard[key] = i
    pool = None
    if jobs > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(jobs)
    bar = tqdm(total=total, desc="prepare", unit="sample", disable=not progress)
    try:
        batch: list[Sample] = []
        batch_shard = index = 0
        seen_ids: set[str] = set()

        def flush(batch, shard_no):
            work, new_frames = [], []
            for s in batch:
                key = cached_frame_key(s)
                need = key not in frame_shard
                if need:
                    frame_shard[key] = shard_no
                    new_frames.append(key)
                work.append((s, need, processor.image_size, processor.mask_grid_size, _modes(processor)))
            results = pool.imap(_prepare_one, work, chunksize=8) if pool else map(_prepare_one, work)
            tensors, samples_meta = {}, {}
            frame_grids: dict[str, dict[bytes, int]] = {}  # per frame: a mask's bytes -> its row in grids/{key}
            for s, (sample_id, arrays) in zip(batch, results):
                if sample_id in seen_ids:
                    raise CacheError(f"sample id {sample_id!r} occurs more than once in {source}")
                seen_ids.add(sample_id)
                key = cached_frame_key(s)
                if "rgb" in arrays:
                    tensors[f"frame/{key}/rgb"] = torch.from_numpy(np.ascontiguousarray(arrays["rgb"]))
                    if "depth" in arrays:
                        tensors[f"frame/{key}/depth"] = torch.from_numpy(arrays["depth"])
                if "masks" in arrays:
                    rows = frame_grids.setdefault(key, {})
                    tensors[f"regions/{sample_id}"] = torch.tensor(
                        [rows.setdefault(mask.tobytes(), len(rows)) for mask in arrays["masks"]], dtype=torch.int32)
                samples_meta[sample_id] = key
                bar.update(1)
            grid = processor.mask_grid_size
            for key, rows in frame_grids.items():
                tensors[f"grids/{key}"] = torch.from_numpy(
                    np.frombuffer(b"".join(rows), np.float16).reshape(len(rows), grid, grid).copy())
            name = f"shard-{shard_no:05d}.safetensors"
            tmp = out / f".{name}.tmp"
            save_file(tensors, str(tmp), metadata={"samples": json.dumps(samples_meta)})
            os.replace(tmp, out / name)
            manifest["shards"].append({"file": name, "sha256": file_sha256(out / name), "frames": new_frames,
                                       "samples": len(batch)})
            write_json_atomic(manifest_path, manifest, indent=1)

        for sample in samples:
            shard_no = index // samples_per_shard
            index += 1
            if shard_no < done_shards:
                bar.update(1)
                continue
            batch.append(sample)
            batch_shard = shard_no
            if len(batch) == samples_per_shard:
                flush(batch, batch_shard)
                batch = []
        if batch:
            flush(batch, batch_shard)
        manifest["complete"] = True
        write_json_atomic(manifest_path, manifest, indent=1)
    finally:
        bar.close()
        if pool:
            pool.close()
    return out


@dataclass
class _Located:
    shard: int
    frame: str


class PreparedCache:
    """Reads a cache written by `build_cache`; `prepare(sample)` returns what the processor would."""

    def __init__(self, folder: str | Path, processor, source: str | Path | None = None, verify: bool = True):
        self.folder = Path(folder)
        self.processor = processor
        path = self.folder / MANIFEST
        if not path.is_file():
            raise CacheError(f"{self.folder} is not a preprocessing cache (no {MANIFEST})")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CacheError(f"{path} is corrupt ({exc})") from None
        if self.manifest.get("version") != CACHE_VERSION:
            raise CacheError(f"{self.folder} was written by another cache version; prepare it again")
        if not self.manifest.get("complete"):
            raise CacheError(f"{self.folder} is incomplete (an interrupted prepare); run `smolrgpt data prepare` again")
        if self.manifest["processor"] != _settings(processor):
            raise CacheError(f"{self.folder} was prepared for {self.manifest['processor']}, "
                             f"the model needs {_settings(processor)}")
        if source is not None and source_fingerprint(source) != self.manifest["source"]:
            raise CacheError(f"{self.folder} is stale: {source} changed since the cache was prepared")
        self.samples: dict[str, _Located] = {}
        self.frames: dict[str, int] = {}
        self._handles: dict[int, object] = {}
        for i, shard in enumerate(self.manifest["shards"]):
            file = self.folder / shard["file"]
            if not file.is_file():
                raise CacheError(f"{file} is missing")
            if verify and file_sha256(file) != shard["sha256"]:
                raise CacheError(f"{file} is corrupt (checksum mismatch)")
            for key in shard["frames"]:
                self.frames[key] = i
            try:
                with safe_open(str(file), framework="pt") as fh:
                    meta = json.loads(fh.metadata()["samples"])
            except Exception as exc:  # safetensors raises its own error types for damaged headers
                raise CacheError(f"{file} is corrupt ({exc})") from None
            for sample_id, key in meta.items():
                self.samples[sample_id] = _Located(i, key)

    def _tensor(self, shard: int, name: str) -> np.ndarray:
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.folder / self.manifest["shards"][shard]["file"]), framework="pt")
        return self._handles[shard].get_tensor(name).numpy()

    def __contains__(self, sample: Sample) -> bool:
        return sample.id in self.samples

    def prepare(self, sample: Sample, train: bool = True):
        from smolrgpt.processing.processor import PreparedSample

        located = self.samples.get(sample.id)
        if located is None:
            raise CacheError(f"sample {sample.id!r} is not in the cache {self.folder}")
        if located.frame != cached_frame_key(sample):
            raise CacheError(f"sample {sample.id!r}: the cache holds another frame for it (stale cache)")
        try:
            ids, labels = self.processor.prompt_arrays(sample.turns, len(sample.regions), train)
        except RegionDecodeError as exc:
            raise SampleError(str(exc), sample_id=sample.id, source=sample.source) from None
        frame_shard = self.frames[located.frame]
        rgb = rgb_normalize(self._tensor(frame_shard, f"frame/{located.frame}/rgb"))
        depth = None
        if sample.depth is not None:
            depth = depth_normalize(self._tensor(frame_shard, f"frame/{located.frame}/depth"), _modes(self.processor)[1])
        grid = self.processor.mask_grid_size
        masks = np.zeros((0, grid, grid), np.float32)
        if sample.regions:
            rows = self._tensor(located.shard, f"regions/{sample.id}")
            grids = self._tensor(located.shard, f"grids/{located.frame}")
            if len(rows) and (rows.min() < 0 or rows.max() >= len(grids)):
                raise CacheError(f"sample {sample.id!r}: mask rows {rows.tolist()} outside the frame's "
                                 f"{len(grids)} cached masks (corrupt cache)")
            masks = grids[rows].astype(np.float32)
        if len(masks) != len(sample.regions):
            raise CacheError(f"sample {sample.id!r}: the cache holds {len(masks)} masks, the sample has "
                             f"{len(sample.regions)} regions (stale cache)")
        return PreparedSample(sample.id, ids, labels, rgb, depth, masks, located.frame)

