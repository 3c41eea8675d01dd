"""Stream the elements of one top-level JSON array without loading the file.

The Open Spatial Dataset is a single 31.9 GB array and the Track 3 train file a few hundred MB; both
are read element by element: bytes are decoded incrementally into a sliding text buffer and each
element is parsed by the C scanner behind `json.JSONDecoder.raw_decode`. Memory stays at about one
read chunk plus the largest element, whatever the file size.

Any syntax error, including a truncated file, raises `MalformedJSONError` with the element index,
line, column and character offset, so a user can open the file at the right place.
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, Iterator

from smolrgpt.errors import SampleError

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_TAIL = re.compile(r"[0-9eE.+\-]*")
_DECODER = json.JSONDecoder()
# An error this close to the end of the buffer may only mean the element continues in the next chunk.
_NEAR_END = 16


class MalformedJSONError(SampleError):
    """The file is not a well-formed JSON array (syntax error or truncation) at a known position."""

    def __init__(self, message: str, *, path: str, index: int, line: int, column: int, offset: int):
        self.index, self.line, self.column, self.offset = index, line, column, offset
        super().__init__(f"{message} at line {line} column {column} (char {offset})",
                         source=f"{path}#record {index}")


class JSONArrayStream:
    """Iterate `(index, element)` over the top-level array of a JSON file.

    `bytes_read` and `total_bytes` let a caller show progress. The file is closed when iteration ends
    or the stream is garbage-collected.
    """

    def __init__(self, path: str | Path, *, chunk_bytes: int = 1 << 20, max_element_chars: int = 1 << 30):
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.max_element_chars = max_element_chars
        if not self.path.is_file():
            raise SampleError("file not found" if not self.path.exists() else "not a file", source=str(self.path))
        self.total_bytes = self.path.stat().st_size
        self.bytes_read = 0

    # -- buffer bookkeeping: `_dropped_*` describe text already discarded from the front of the buffer
    def _reset(self) -> None:
        self._buf = ""
        self._eof = False
        self._dropped_chars = 0
        self._dropped_lines = 0
        self._dropped_tail_cols = 0  # characters after the last newline of the discarded text

    def _fill(self, file, pos: int, want: int) -> int:
        """Append at least `want` bytes worth of text, discarding text before `pos`; returns the new pos."""
        if pos:
            newlines = self._buf.count("\n", 0, pos)  # counted in place: no copy of the dropped text
            if newlines:
                self._dropped_lines += newlines
                self._dropped_tail_cols = pos - self._buf.rfind("\n", 0, pos) - 1
            else:
                self._dropped_tail_cols += pos
            self._dropped_chars += pos
            self._buf = self._buf[pos:]
        data = file.read(want)
        self.bytes_read += len(data)
        try:
            if data:
                self._buf += self._utf8.decode(data)
            else:
                self._buf += self._utf8.decode(b"", final=True)
                self._eof = True
        except UnicodeDecodeError as exc:
            raise self._error(f"invalid UTF-8 ({exc.reason})", self._index, len(self._buf)) from None
        return 0

    def _error(self, message: str, index: int, buf_pos: int) -> MalformedJSONError:
        buf = self._buf
        line = self._dropped_lines + buf.count("\n", 0, buf_pos) + 1
        last_newline = buf.rfind("\n", 0, buf_pos)
        column = buf_pos - last_newline if last_newline >= 0 else self._dropped_tail_cols + buf_pos + 1
        return MalformedJSONError(message, path=str(self.path), index=index, line=line, column=column,
                                  offset=self._dropped_chars + buf_pos)

    def _skip_whitespace(self, file, pos: int) -> tuple[int, str | None]:
        """Position of the next non-blank character (reading more as needed) and that character."""
        while True:
            pos = _WHITESPACE.match(self._buf, pos).end()
            if pos < len(self._buf):
                return pos, self._buf[pos]
            if self._eof:
                return pos, None
            pos = self._fill(file, pos, self.chunk_bytes)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        self._reset()
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")()  # tolerate a byte-order mark
        self._index = 0
        with open(self.path, "rb") as file:
            pos, char = self._skip_whitespace(file, 0)
            if char != "[":
                found = "the end of the file" if char is None else repr(char)
                raise self._error(f"expected a JSON array ('['), found {found}", 0, pos)
            pos, char = self._skip_whitespace(file, pos + 1)
            if char == "]":
                self._expect_end(file, pos + 1)
                return
            want = self.chunk_bytes
            while True:
                if char is None:
                    raise self._error(f"file ends before record {self._index} (truncated?)", self._index, pos)
                try:
                    value, end = _DECODER.raw_decode(self._buf, pos)
                except RecursionError:
                    raise self._error(f"record {self._index} is nested too deeply to read", self._index, pos) from None
                except json.JSONDecodeError as exc:
                    maybe_incomplete = exc.pos >= len(self._buf) - _NEAR_END or exc.msg.startswith("Unterminated")
                    if self._eof or not maybe_incomplete:
                        truncated = self._eof and (exc.pos >= len(self._buf.rstrip()) or exc.msg.startswith("Unterm"))
                        what = "file ends inside" if truncated else "malformed JSON in"
                        raise self._error(f"{what} record {self._index} ({exc.msg})", self._index, exc.pos) from None
                    if len(self._buf) - pos > self.max_element_chars:
                        raise self._error(f"record {self._index} is larger than {self.max_element_chars} "
                                          "characters (or never closes)", self._index, pos) from None
                    pos = self._fill(file, pos, want)
                    want *= 2  # grow geometrically so a huge element is re-scanned O(log n) times, not O(n)
                    continue
                if not self._eof and _NUMBER_TAIL.fullmatch(self._buf, end):
                    # "0." or "1e" at the buffer end decodes as 0 or 1: the number may continue in the next chunk.
                    pos = self._fill(file, pos, want)
                    continue
                want = self.chunk_bytes
                yield self._index, value
                self._index += 1
                pos, char = self._skip_whitespace(file, end)
                if char == ",":
                    pos, char = self._skip_whitespace(file, pos + 1)
                    continue
                if char == "]":
                    self._expect_end(file, pos + 1)
                    return
                if char is None:
                    raise self._error(f"file ends after record {self._index - 1}: the array is never closed "
                                      "(truncated?)", self._index, pos)
                raise self._error(f"expected ',' or ']' after record {self._index - 1}, found {char!r}",
                                  self._index, pos)

    def _expect_end(self, file, pos: int) -> None:
        pos, char = self._skip_whitespace(file, pos)
        if char is not None:
            raise self._error(f"unexpected {char!r} after the end of the array", self._index, pos)


def iter_json_array(path: str | Path, **options) -> Iterator[tuple[int, Any]]:
    """`(index, element)` for each element of the file's top-level JSON array, streamed."""
    return iter(JSONArrayStream(path, **options))


def first_element(path: str | Path) -> Any:
    """The first element of the array (None for an empty array); reads only the start of the file."""
    stream = iter(JSONArrayStream(path, chunk_bytes=1 << 16))
    try:
        for _, value in stream:
            return value
        return None
    finally:
        stream.close()
