"""Reader for LLaVA-CC3M-Pretrain-595K `chat.json` (stage 1: RGB connector alignment).

Record: `{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": caption}]}`. RGB only: no depth, no regions.

Paths: the image is `<images_dir>/<image>`. By default `images_dir` is the `images/` folder next to
`chat.json` when it exists, otherwise the folder of `chat.json` itself (the archive `images.zip` is
unpacked either way depending on who unpacked it); pass `images_dir` to be explicit.

Also home of `llava_turns`, the parser of the `{"from", "value"}` conversation lists that Track 3
and the Open Spatial Dataset use as well.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from smolrgpt.data.jsonarray import iter_json_array
from smolrgpt.data.sample import MASK_TAG, Sample
from smolrgpt.errors import SampleError

_HUMAN = ("human", "user")
_ASSISTANT = ("gpt", "assistant")


def record_source(path: str | Path, index: int) -> str:
    return f"{path}#record {index}"


def llava_turns(conversations: Any, *, sample_id: str | None, source: str) -> list[tuple[str, str | None]]:
    """`[{"from": "human", ...}, {"from": "gpt", ...}, ...]` -> [(question, answer), ...].

    Turns must alternate human/gpt starting with human; a final human turn without an answer gets
    answer None (test files, inference).
    """
    if not isinstance(conversations, list) or not conversations:
        raise SampleError("'conversations' must be a non-empty list of turns", sample_id=sample_id, source=source)
    turns: list[tuple[str, str | None]] = []
    for k, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise SampleError(f"turn {k} must be an object with a string 'value'", sample_id=sample_id, source=source)
        speaker = turn.get("from")
        expected = _HUMAN if k % 2 == 0 else _ASSISTANT
        if speaker not in expected:
            raise SampleError(f"turn {k} is from {speaker!r}; expected {expected[0]!r} (turns must alternate "
                              "human/gpt, starting with human)", sample_id=sample_id, source=source)
        if k % 2 == 0:
            turns.append((turn["value"], None))
        else:
            turns[-1] = (turns[-1][0], turn["value"])
    return turns


def record_id(record: dict, index: int, *, source: str) -> str:
    if "id" not in record or record["id"] is None or isinstance(record["id"], (dict, list, bool)):
        raise SampleError("missing or invalid 'id'", sample_id=f"#{index}", source=source)
    return str(record["id"])


def require_object(record: Any, index: int, source: str) -> None:
    if not isinstance(record, dict):
        raise SampleError(f"record is a {type(record).__name__}, not an object", sample_id=f"#{index}", source=source)


def record_header(record: Any, index: int, path: str | Path) -> tuple[str, str]:
    """(source, sample id) of a JSON record that must be an object with an 'id'."""
    source = record_source(path, index)
    require_object(record, index, source)
    return source, record_id(record, index, source=source)


def image_field(record: dict, *, sample_id: str, source: str) -> str:
    """The record's 'image' file name (LLaVA and Track 3)."""
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise SampleError("missing or invalid 'image' (a file name)", sample_id=sample_id, source=source)
    return image


def default_images_dir(path: Path) -> Path:
    beside = path.parent / "images"
    return beside if beside.is_dir() else path.parent


def llava_record_to_sample(record: Any, index: int, *, path: str | Path, images_dir: str | Path,
                           validate: bool = True) -> Sample:
    """One `chat.json` record -> Sample. Raises SampleError naming the record and the file."""
    source, sample_id = record_header(record, index, path)
    image = image_field(record, sample_id=sample_id, source=source)
    turns = llava_turns(record.get("conversations"), sample_id=sample_id, source=source)
    if validate and any(MASK_TAG in q for q, _ in turns):
        raise SampleError(f"question has {MASK_TAG} tags but LLaVA records carry no regions",
                          sample_id=sample_id, source=source)
    return Sample(id=sample_id, image=Path(images_dir) / image, turns=turns, source=source,
                  meta={"index": index, "format": "llava"})


def iter_llava(path: str | Path, *, images_dir: str | Path | None = None, validate: bool = True) -> Iterator[Sample]:
    """Stream the Samples of a LLaVA `chat.json` (image paths are not opened here)."""
    path = Path(path)
    images_dir = Path(images_dir) if images_dir is not None else default_images_dir(path)
    for index, record in iter_json_array(path):
        yield llava_record_to_sample(record, index, path=path, images_dir=images_dir, validate=validate)
