"""The built-in data set (`smolrgpt synth`), procedural warehouse frames in the real Track 3 layout.

Every frame has its own random generator, seeded from (seed, split, frame index): a frame does not depend
on the other frames, on how many are asked for, or on the number of workers, and val/test frames are never
train frames. Re-running with the same arguments skips frames already written (their scene file is
written last), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smolrgpt.atomic import write_bytes_atomic, write_json_atomic
from smolrgpt.errors import ConfigError

SPLITS = ("train", "val", "test")
SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}  # part of each frame's seed
GENERATOR_VERSION = 1  # bump when the same arguments would produce different files
MANIFEST = "synth_manifest.json"


@dataclass(frozen=True)
class SynthConfig:
    out: str
    seed: int = 0
    width: int = 640
    height: int = 360
    questions_per_frame: int = 5
    frames: tuple[tuple[str, int], ...] = (("train", 100), ("val", 10), ("test", 10))
    instance_maps: bool = False

    def identity(self) -> dict:
        """What decides the content of a frame (frame counts do not: frames are independent)."""
        return {"generator": "smolrgpt synth", "version": GENERATOR_VERSION, "seed": self.seed,
                "size": [self.width, self.height], "questions_per_frame": self.questions_per_frame,
                "instance_maps": self.instance_maps}


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m:
        raise ConfigError(f"--size must look like WIDTHxHEIGHT (e.g. 640x360), got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if not (64 <= w <= 8192 and 64 <= h <= 8192):
        raise ConfigError(f"--size {w}x{h}: width and height must be between 64 and 8192 pixels")
    return w, h


def parse_splits(text: str) -> tuple[tuple[str, int], ...]:
    counts = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SPLITS or not value.strip().isdigit():
            raise ConfigError(f"--splits expects e.g. train=800,val=100,test=100 (splits: {', '.join(SPLITS)}); "
                              f"cannot read {item!r}")
        if name in counts:
            raise ConfigError(f"--splits names {name!r} twice")
        counts[name] = int(value)
    if not counts:
        raise ConfigError("--splits is empty")
    if not any(counts.values()):
        raise ConfigError(f"--splits {text!r} asks for no frame at all")
    return tuple((s, counts.get(s, 0)) for s in SPLITS)


def default_splits(train_frames: int) -> tuple[tuple[str, int], ...]:
    if train_frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {train_frames}")
    small = math.ceil(train_frames / 10)
    return (("train", train_frames), ("val", small), ("test", small))


def question_id(seed: int, split: str, frame: int, k: int) -> str:
    return hashlib.md5(f"smolrgpt-synth/{GENERATOR_VERSION}/{seed}/{split}/{frame}/{k}".encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ frames
def generate_frame(config: SynthConfig, split: str, frame: int) -> list[dict]:
    """Render one frame, write its image, depth and scene files; return its full records."""
    from smolrgpt.synth import writer
    from smolrgpt.synth.questions import make_questions
    from smolrgpt.synth.render import render
    from smolrgpt.synth.scene import generate_scene

    root = Path(config.out) / split
    stem = f"{frame:06d}"
    scene_path = root / "scenes" / f"{stem}.json"
    if scene_path.exists():
        try:
            done = json.loads(scene_path.read_text())
            if done.get("frame") == frame and done.get("split") == split and "records" in done:
                return done["records"]
        except (OSError, ValueError):
            pass  # a damaged file: render the frame again

    rng = np.random.default_rng([config.seed, SPLIT_STREAM[split], frame])
    want = config.questions_per_frame
    best = None
    for _attempt in range(4):  # a view that hides most things yields few questions: draw another scene
        scene = generate_scene(rng, config.width, config.height)
        rendering = render(scene)
        qas = make_questions(scene, rendering, rng, want)
        if best is None or len(qas) > len(best[2]):
            best = (scene, rendering, qas)
        if len(qas) >= math.ceil(0.6 * want):
            break
    scene, rendering, qas = best
    ids = [question_id(config.seed, split, frame, k) for k in range(len(qas))]
    image_name, depth_name = f"{stem}.png", f"{stem}_depth.png"
    records = writer.frame_records(qas, ids, image_name, rendering.instances)
    depth8, near, far = writer.encode_depth(rendering.depth)
    # Textured, noisy RGB barely compresses better at level 6, which costs 2-4x the time of level 1.
    write_bytes_atomic(root / "images" / image_name, writer.png_bytes(rendering.rgb, compress_level=1))
    write_bytes_atomic(root / "depths" / depth_name, writer.png_bytes(depth8))
    if config.instance_maps:
        write_bytes_atomic(root / "instances" / f"{stem}.png", writer.instance_png(rendering.instances))
    meta = writer.scene_metadata(scene, rendering, (near, far), split=split, frame=frame, image_name=image_name,
                                 depth_name=depth_name, qas=qas, ids=ids)
    meta["records"] = records
    write_json_atomic(scene_path, meta)  # last: its presence marks the frame as complete
    return records


def _frame_job(job):
    config, split, frame = job
    return generate_frame(config, split, frame)


def _check_manifest(config: SynthConfig, force: bool) -> None:
    """The shared output guard: resume a data set made with the same settings; refuse anything else in
    --out unless --overwrite (alias --force)."""
    from smolrgpt.atomic import claim_output

    out = Path(config.out)
    path = out / MANIFEST
    try:
        saved = json.loads(path.read_text()) if out.is_dir() and path.is_file() else None
    except (ValueError, UnicodeDecodeError):
        saved = None
    if not isinstance(saved, dict):
        saved = None
    verdict = claim_output(out, "synth", overwrite=force, saved=saved, settings=config.identity())
    if verdict == "replace" and out.is_dir():  # frames made with other settings must not be picked up as finished
        for split in SPLITS:
            for scene_file in (out / split / "scenes").glob("*.json"):
                scene_file.unlink()
    write_json_atomic(path, config.identity())


def generate_dataset(config: SynthConfig, *, workers: int = 1, force: bool = False, progress: bool = True) -> dict:
    """Write the whole data set; return a summary (frames, questions, seconds per split)."""
    from tqdm import tqdm

    from smolrgpt.synth.writer import answer_record, test_record

    _check_manifest(config, force)
    out = Path(config.out)
    summary = {"out": str(out), "splits": {}, "seconds": 0.0}
    start = time.perf_counter()
    # fork shares the imported modules with the workers; spawn where fork does not exist (Windows).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(workers) if workers > 1 else None
    try:
        for split, n_frames in config.frames:
            t0 = time.perf_counter()
            jobs = [(config, split, i) for i in range(n_frames)]
            results = pool.imap(_frame_job, jobs, chunksize=1) if pool else map(_frame_job, jobs)
            records = []
            for frame_records in tqdm(results, total=n_frames, desc=f"synth {split}", unit="frame", disable=not progress):
                records.extend(frame_records)
            if split == "test":
                write_json_atomic(out / "test.json", [test_record(r) for r in records])
                write_json_atomic(out / "test_answers.json", [answer_record(r) for r in records])
            else:
                write_json_atomic(out / f"{split}.json", records)
            summary["splits"][split] = {"frames": n_frames, "questions": len(records),
                                        "seconds": round(time.perf_counter() - t0, 3)}
    finally:
        if pool:
            pool.close()
            pool.join()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary
