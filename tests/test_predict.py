"""predict / eval on a small Track 3-layout split: resumable, frame-grouped, official submission."""
import json

import pytest

from smolrgpt.cli import main
from smolrgpt.data import open_dataset
from smolrgpt.engine import SmolRGPT
from smolrgpt.evaluation.predict import PREDICTIONS, SUBMISSION, predict, read_finished

from conftest import write_track3_split


@pytest.fixture()
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["init", "--preset", "smolrgpt-tiny", "--out", str(folder), "--seed", "1"]) == 0
    return folder


def test_interrupted_then_resumed_prediction_equals_one_run(tmp_path, checkpoint):
    split = write_track3_split(tmp_path / "data", frames=4, questions_per_frame=3)
    samples = list(open_dataset(split))
    engine = SmolRGPT.load(checkpoint, max_new_tokens=6)
    one = predict(engine, samples, tmp_path / "one", batch_size=4, max_new_tokens=6, progress=False)
    assert one.answered == 12
    partial = predict(engine, samples, tmp_path / "two", batch_size=4, max_new_tokens=6, progress=False,
                      stop_after_batches=1)
    assert partial.answered == 4 and not (tmp_path / "two" / SUBMISSION).exists()
    with open(tmp_path / "two" / PREDICTIONS, "a") as fh:  # a crash in the middle of writing a line
        fh.write('{"id": "torn')
    resumed = predict(engine, samples, tmp_path / "two", batch_size=4, max_new_tokens=6, progress=False)
    assert resumed.already_done == 4 and resumed.answered == 8
    assert (tmp_path / "one" / SUBMISSION).read_bytes() == (tmp_path / "two" / SUBMISSION).read_bytes()
    assert read_finished(tmp_path / "one" / PREDICTIONS) == read_finished(tmp_path / "two" / PREDICTIONS)
    submission = json.loads((tmp_path / "one" / SUBMISSION).read_text())
    assert [r["id"] for r in submission] == [s.id for s in samples]


def test_each_frame_is_encoded_once(tmp_path, checkpoint, monkeypatch):
    split = write_track3_split(tmp_path / "data", frames=3, questions_per_frame=4)
    samples = list(open_dataset(split))
    engine = SmolRGPT.load(checkpoint, max_new_tokens=4)
    seen = []
    original = engine.model.encode_patches
    monkeypatch.setattr(engine.model, "encode_patches", lambda x: seen.append(x.shape[0]) or original(x))
    predict(engine, samples, tmp_path / "out", batch_size=5, max_new_tokens=4, progress=False)
    assert sum(seen) == 3 * 2  # RGB + depth of each of the 3 frames, once


def test_eval_cli_writes_the_report(tmp_path, checkpoint, capsys):
    split = write_track3_split(tmp_path / "data", frames=4, questions_per_frame=4)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(checkpoint), "--data", str(split), "--out", str(out),
                 "--max-new-tokens", "6", "--no-progress", "--gallery", "2"]) == 0
    printed = capsys.readouterr().out
    assert "final (macro)" in printed and "left_right (rows: truth, columns: prediction)" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["categories"]) == {"count", "distance", "left_right", "mcq"}
    assert sum(report["counts"].values()) == 16
    for name in ("scores.png", "distance_errors.png", "report.txt", "gallery/index.html", "eval_config.json"):
        assert (out / name).is_file(), name
    page = (out / "gallery" / "index.html").read_text()
    assert page.count("<img src=") == 8


def test_eval_needs_ground_truth(tmp_path, checkpoint, capsys):
    split = write_track3_split(tmp_path / "data", split="test", with_answers=False)
    assert main(["eval", "--model", str(checkpoint), "--data", str(split), "--out", str(tmp_path / "e"),
                 "--no-progress"]) == 2
    assert "have no ground truth" in capsys.readouterr().err
