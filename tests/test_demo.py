"""`smolrgpt demo`: settings validation, chance baselines, and a miniature run end to end with resume."""
from __future__ import annotations

import json
import shlex

import pytest
from PIL import Image

from smolrgpt.cli import main
from smolrgpt.demo.baselines import constant_answers, constant_predictions, random_predictions
from smolrgpt.demo.config import load_demo_config
from smolrgpt.demo.report import comparison_table
from smolrgpt.errors import ConfigError
from smolrgpt.evaluation.score import score_submission

# A run small enough for the default test suite: 8 training frames, 10 steps per stage at most.
MINI = ["data.size=320x180", "data.questions_per_frame=3", "data.min_train_frames=8",
        "data.train_frames_per_minute=0", "data.val_frames=3", "data.test_frames=1", "data.workers=1",
        "budget.minutes=0.01", "budget.min_steps=3", "eval.max_new_tokens=16", "eval.gallery=1"]


def test_packaged_settings_load_and_scale_data_with_the_budget():
    config = load_demo_config()
    assert config.budget.minutes == 12 and config.model.init == "preset:smolrgpt-tiny"
    assert config.train_frames() == 600
    assert load_demo_config(None, ["budget.minutes=60"]).train_frames() == 3000
    assert load_demo_config(None, ["budget.minutes=1"]).train_frames() == config.data.min_train_frames


@pytest.mark.parametrize("override, message", [
    ("budget.minutes=0", "budget.minutes must be positive"),
    ("budget.minuets=3", "unknown setting budget.minuets"),
    ("data.size=640by360", "data.size"),
    ("data.val_frames=zero", "data.val_frames: expected an integer"),
    ("budget.stage1_share=0.95", "stage 3 gets the rest"),
    ("eval.precision=fp16", "eval.precision"),
    ("model=tiny", "model is a section"),
])
def test_bad_settings_are_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_demo_config(None, [override])


def _records():
    rle = {"size": [4, 4], "counts": "0@"}
    mk = lambda i, cat, ans, masks=2: {"id": f"q{i}", "category": cat, "normalized_answer": ans,  # noqa: E731
                                       "conversations": [{"from": "human", "value": " ".join(["<mask>"] * masks)}],
                                       "rle": [rle] * masks}
    train = [mk(0, "left_right", "left"), mk(1, "left_right", "left"), mk(2, "left_right", "right"),
             mk(3, "count", 3), mk(4, "count", 3), mk(5, "count", 1), mk(6, "distance", 1.0),
             mk(7, "distance", 2.0), mk(8, "distance", 10.0), mk(9, "mcq", 1, 3), mk(10, "mcq", 1, 3)]
    val = [mk(20, "left_right", "left"), mk(21, "left_right", "right"), mk(22, "count", 3),
           mk(23, "distance", 2.1), mk(24, "distance", 5.0), mk(25, "mcq", 0, 4)]
    return train, val


def test_constant_baseline_answers_the_most_frequent_training_answer():
    train, val = _records()
    assert constant_answers(train) == {"left_right": "left", "count": 3, "mcq": 1, "distance": 2.0}
    gt = [{k: r[k] for k in ("id", "category", "normalized_answer")} for r in val]
    report = score_submission(gt, constant_predictions(val, train))
    # left: 1 of 2; count 3: 1 of 1; 2.0 vs 2.1 is within 10%, vs 5.0 is not; mcq 1 != 0
    assert report.categories == {"left_right": 50.0, "count": 100.0, "distance": 50.0, "mcq": 0.0}


def test_random_baseline_is_seeded_and_draws_valid_answers():
    train, val = _records()
    first, again = random_predictions(val, train, seed=3), random_predictions(val, train, seed=3)
    assert first == again
    by_id = {p["id"]: p["normalized_answer"] for p in first}
    assert by_id["q20"] in ("left", "right") and by_id["q22"] in (3, 1)
    assert by_id["q23"] in (1.0, 2.0, 10.0) and 0 <= by_id["q25"] < 4
    draws = {random_predictions(val, train, seed=s)[5]["normalized_answer"] for s in range(40)}
    assert draws == {0, 1, 2, 3}  # uniform over the question's own four masks


def test_comparison_table_lists_each_system_and_the_question_counts():
    table = comparison_table({"model": {"categories": {"left_right": 100.0, "count": 50.0, "distance": 25.0,
                                                       "mcq": None}, "final": 58.33}},
                             {"left_right": 2, "count": 4, "distance": 4, "mcq": 0})
    lines = table.splitlines()
    assert lines[0].split() == ["left_right", "count", "distance", "mcq", "final"]
    assert lines[1].split() == ["questions", "2", "4", "4", "0"]
    assert lines[2].split() == ["model", "100.00", "50.00", "25.00", "-", "58.33"]


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress", *MINI]) == 0
    printed = capsys.readouterr().out
    state = json.loads((out / "demo_state.json").read_text())
    assert list(state["phases"]) == ["data", "captions", "caches", "plan", "stage1", "stage2", "stage3", "model",
                                     "evaluate"]
    # the budget is spent by data generation already: every stage trains its minimum
    assert state["plan"]["steps"] == {"1": 3, "2": 3, "3": 3}
    for stage in (1, 2, 3):
        done = json.loads((out / "runs" / f"stage{stage}" / "DONE").read_text())
        assert done["steps"] == 3
    # validation and test frames are never trained on: their questions are not in the training files
    train_ids = {r["id"] for r in json.loads((out / "data" / "train.json").read_text())}
    val = json.loads((out / "data" / "val.json").read_text())
    assert not train_ids & {r["id"] for r in val}
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["reports"]) == ["SmolRGPT (this run)", "constant answers", "random answers"]
    assert sum(scores["counts"].values()) == len(val)
    # the model row is the scorer's verdict on the submission the run wrote
    submission = json.loads((out / "eval" / "submission.json").read_text())
    gt = [{k: r[k] for k in ("id", "category", "normalized_answer")} for r in val]
    assert scores["reports"]["SmolRGPT (this run)"]["final"] == score_submission(gt, submission).final
    for name in ("training_curves.png", "eval/gallery/gallery.png", "eval/scores.png", "eval/gallery/index.html",
                 "model/model.safetensors", "demo_config.yaml"):
        assert (out / name).is_file(), name
    assert Image.open(out / "training_curves.png").size[0] > 500
    assert "SmolRGPT (this run)" in printed and str(out / "model") in printed

    # the printed `ask` command works on the exported model as it is
    ask = next(line for line in printed.splitlines() if line.startswith("ask it:")).split(":", 1)[1].strip()
    assert main([*shlex.split(ask)[1:], "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert isinstance(answer["answer"], str)

    # a rerun skips every finished phase and prints the same table
    assert main(["demo", "--out", str(out), "--no-progress", *MINI]) == 0
    again = capsys.readouterr().out
    assert again.count("done earlier") == 9
    assert json.loads((out / "scores.json").read_text()) == scores

    # other settings in the same folder are refused instead of mixed
    assert main(["demo", "--out", str(out), "--no-progress", *MINI[:-1], "eval.gallery=2"]) == 2
    assert "holds a demo run made with other settings" in capsys.readouterr().err


def test_an_interrupted_demo_resumes_inside_the_stage_it_stopped_in(tmp_path, monkeypatch, capsys):
    from smolrgpt.training.trainer import Trainer

    out = tmp_path / "demo"
    real_step, calls = Trainer._train_step, {"n": 0}

    def crash_in_stage3_step3(self, micro):
        if self.cfg.train.stage == 3 and self.step == 2:  # the plan's timing steps never advance self.step
            calls["n"] += 1
            raise KeyboardInterrupt("power cut")
        return real_step(self, micro)

    monkeypatch.setattr(Trainer, "_train_step", crash_in_stage3_step3)
    assert main(["demo", "--out", str(out), "--no-progress", *MINI]) == 130  # Ctrl-C: one line, exit 130
    assert capsys.readouterr().err.endswith("smolrgpt demo: interrupted\n")
    assert calls["n"] == 1
    state = json.loads((out / "demo_state.json").read_text())
    assert list(state["phases"]) == ["data", "captions", "caches", "plan", "stage1", "stage2"]
    assert (out / "runs" / "stage3" / "last").is_dir()

    monkeypatch.setattr(Trainer, "_train_step", real_step)
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--no-progress", *MINI]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done earlier") == 6 and "stage 3: resuming" in printed
    steps = [json.loads(line)["step"] for line in (out / "runs" / "stage3" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "train"]
    assert steps == [1, 2, 3]  # nothing lost, nothing repeated


def test_stage3_is_timed_again_at_its_start_and_sized_from_the_time_left(tmp_path, monkeypatch, capsys):
    import smolrgpt.training.trainer as trainer
    from smolrgpt.demo.runner import Demo

    out = tmp_path / "demo"
    demo = Demo(load_demo_config(None, ["budget.minutes=10"]), out, progress=False)
    demo.state.data["plan"] = {"seconds_per_step": {"1": 0.1, "2": 0.2, "3": 0.2},
                               "eval_overhead_seconds": {"1": 0.0, "2": 0.0, "3": 10.0},
                               "final_eval_seconds": 20.0, "steps": {"1": 5, "2": 5, "3": 1000}}
    demo.state.finish("data", 170.0)  # 600 s - 170 spent - 20 final evaluation - 10 stage-3 evaluations = 400
    timed, trained = [], []
    monkeypatch.setattr(trainer, "seconds_per_step",
                        lambda config, max_seconds: timed.append((config, max_seconds)) or 0.5)
    monkeypatch.setattr(trainer, "train", lambda config, resume: trained.append(config) or {})
    demo.train_stage(3)
    config, max_seconds = timed[0]
    assert config.model.init == str(out / "runs" / "stage2" / "best") and max_seconds == pytest.approx(6.0)
    assert trained[0].schedule.max_steps == 799  # (400 s - the moments the timing took) / 0.5 s
    plan = json.loads((out / "demo_state.json").read_text())["plan"]
    assert plan["seconds_per_step"]["3"] == 0.5 and plan["stage3_seconds_per_step_planned"] == 0.2
    assert "timed again at its start: 0.500 s per step (the plan measured 0.200)" in capsys.readouterr().out
    # a resumed stage 3 keeps its schedule: no second timing, the same step count
    demo.train_stage(3)
    assert len(timed) == 1 and trained[1].schedule.max_steps == 799
