"""Batched, resumable prediction over a data split, writing raw answers and an official submission.

Questions are grouped by frame so that each frame is encoded once and its features serve every question
about it. Progress goes to `predictions.jsonl`, one line per answered question, flushed and fsynced after
every batch; a restart reads it back (dropping a line torn by a crash), skips the finished ids and
continues. The submission file is written atomically at the end, in the order of the data file.

A record that cannot be answered (an image that does not decode, a region that does not fit its frame) is
reported by id and file and left out (`PredictResult.bad`, also written to `skipped.json`); the others
are answered. With `strict` the first such record stops the run instead. A rerun tries the left-out
records again.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from smolrgpt.atomic import write_json_atomic
from smolrgpt.data.sample import Sample
from smolrgpt.errors import SmolRGPTError

PREDICTIONS = "predictions.jsonl"
SUBMISSION = "submission.json"
SKIPPED = "skipped.json"


def read_finished(path: Path) -> dict[str, dict]:
    """Answers already written; a torn last line (crash mid-write) is cut off the file."""
    if not path.exists():
        return {}
    done: dict[str, dict] = {}
    good_bytes = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            done[row["id"]] = row
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


def encoding_key(sample: Sample) -> str:
    """Questions with the same key share one encoded frame: file frames by path, in-memory ones by object."""
    return sample.frame_key() or f"object:{id(sample.image)}:{id(sample.depth)}"


@dataclass
class PredictResult:
    answered: int
    already_done: int
    out_dir: Path
    rows: list[dict]
    bad: list[dict] = field(default_factory=list)  # {"id", "record", "file", "error"} of each record left out


def _where(sample: Sample) -> str:
    return str(sample.image) if isinstance(sample.image, (str, Path)) else (sample.source or "the data")


def predict(engine, samples: list[Sample], out_dir: str | Path, batch_size: int = 8,
            max_new_tokens: int = 64, progress: bool = True, stop_after_batches: int | None = None,
            strict: bool = False) -> PredictResult:
    """Answer every sample's (last) question; resumable. `stop_after_batches` exists for crash tests."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SmolRGPTError(f"the data holds the id {dup!r} more than once")
    finished = read_finished(out_dir / PREDICTIONS)
    todo = [s for s in samples if s.id not in finished]
    groups: dict = {}
    for s in todo:  # frame order of first appearance, questions of one frame together
        groups.setdefault(encoding_key(s), []).append(s)
    ordered = [s for group in groups.values() for s in group]
    frames: dict = {}
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc="predict", unit="q", disable=not progress)
    batches, bad = 0, []
    with open(out_dir / PREDICTIONS, "a") as log:
        for start in range(0, len(ordered), batch_size):
            chunk = ordered[start:start + batch_size]
            keys = {encoding_key(s) for s in chunk}
            for key in list(frames):  # keep only the frames this batch needs: memory stays bounded
                if key not in keys:
                    del frames[key]
            questions, asked = [], []
            for s in chunk:
                key = encoding_key(s)
                try:
                    if key not in frames:
                        frames[key] = engine.frame(s.image, s.depth, s.depth_polarity, frame_id=s.id)
                except SmolRGPTError as exc:
                    _leave_out(bad, s, exc, strict)
                    continue
                questions.append(engine.question(frames[key], s.turns[-1][0], s.regions, s.id))
                asked.append(s)
            try:
                answers = engine.ask_batch(questions, max_new_tokens=max_new_tokens) if questions else []
            except SmolRGPTError:  # one bad question fails its batch: ask one by one to find it
                answers = []
                for s, q in zip(list(asked), questions):
                    try:
                        answers.extend(engine.ask_batch([q], max_new_tokens=max_new_tokens))
                    except SmolRGPTError as exc:
                        _leave_out(bad, s, exc, strict)
                        asked.remove(s)
            for s, a in zip(asked, answers):
                row = {"id": s.id, "question": s.turns[-1][0], "answer": a.text, "category": a.category,
                       "normalized_answer": a.normalized_answer}
                finished[s.id] = row
                log.write(json.dumps(row) + "\n")
            log.flush()
            os.fsync(log.fileno())
            bar.update(len(chunk))
            batches += 1
            if stop_after_batches is not None and batches >= stop_after_batches and start + batch_size < len(ordered):
                bar.close()
                return PredictResult(start + len(chunk) - len(bad), len(samples) - len(todo), out_dir, [], bad)
    bar.close()
    rows = [finished[i] for i in ids if i in finished]
    write_json_atomic(out_dir / SUBMISSION, [{"id": r["id"], "normalized_answer": r["normalized_answer"]} for r in rows], indent=1)
    if bad or (out_dir / SKIPPED).exists():
        write_json_atomic(out_dir / SKIPPED, bad, indent=1)
    return PredictResult(len(todo) - len(bad), len(samples) - len(todo), out_dir, rows, bad)


def _leave_out(bad: list[dict], sample: Sample, exc: SmolRGPTError, strict: bool) -> None:
    reason = getattr(exc, "reason", str(exc))
    if strict:
        raise SmolRGPTError(f"sample {sample.id!r} in {sample.source} (image {_where(sample)}): {reason} "
                            "(--strict stops at the first bad record)") from None
    bad.append({"id": sample.id, "record": sample.source, "file": _where(sample), "error": reason})
