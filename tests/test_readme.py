"""The README's "Python API" example runs as written, against a checkpoint made by `smolrgpt init`."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from smolrgpt import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    assert cli.main(["init", "--preset", "smolrgpt-tiny", "--out", str(tmp_path / "tiny")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SMOLRGPT_CHECKPOINT", str(tmp_path / "tiny"))
    code = python_block("Python API")
    namespace: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md#python-api", "exec"), namespace)
    lines = out.getvalue().splitlines()
    answer, answers, engine = namespace["answer"], namespace["answers"], namespace["engine"]
    assert answer.category == "distance" and isinstance(answer.text, str)
    assert [(a.id, a.category) for a in answers] == [("q1", "left_right"), ("q2", "count")]
    assert lines[0] == f"{answer.text} {answer.category} {answer.normalized_answer}"
    assert lines[1:] == [f"{a.id} {a.category} {a.normalized_answer} {a.text!r}" for a in answers]
    # what the example says: a batch gives the same answers as asking one by one
    frame = namespace["frame"]
    for a, q in zip(answers, ["Is the pallet <mask> to the left of the pallet <mask>?",
                              "How many pallets are in the buffer region <mask>?"]):
        regions = ([[40, 200, 160, 300], [400, 120, 520, 220]] if a.id == "q1" else [namespace["buffer"]])
        assert engine.ask(frame, q, regions).text == a.text
