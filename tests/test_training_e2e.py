"""End to end on a small synthetic set: `smolrgpt train the demo's stage3.yaml`, captions for stage 1
derived from the scene files, and `smolrgpt curriculum` over the three CPU configs."""
from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from PIL import Image

from smolrgpt.cli import main
from smolrgpt.data.sample import CATEGORIES
from smolrgpt.modeling.checkpoint import load_checkpoint
from smolrgpt.training.config import load_config
from training_helpers import DEMO_CONFIGS, write_track3_set

HAVE_SYNTH = importlib.util.find_spec("smolrgpt.synth.dataset") is not None
HAVE_EVAL = all(importlib.util.find_spec(m) for m in ("smolrgpt.evaluation.normalize", "smolrgpt.evaluation.score"))
needs_synth = pytest.mark.skipif(not HAVE_SYNTH, reason="the synthetic generator (smolrgpt.synth) is not installed")
needs_eval = pytest.mark.skipif(not HAVE_EVAL, reason="smolrgpt.evaluation (normaliser, scorer) is not installed")

# In-process runs keep the default thread count and skip what a test does not look at.
FAST = ["logging.progress=false", "train.num_threads=null"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The generator's own output when it is installed, else a set in the same layout made here."""
    root = tmp_path_factory.mktemp("synth")
    if not HAVE_SYNTH:
        return write_track3_set(root, {"train": 6, "val": 2}, questions_per_frame=5, size=(90, 160))
    from smolrgpt.synth.dataset import SynthConfig, generate_dataset

    generate_dataset(SynthConfig(out=str(root), width=320, height=180,
                                 frames=(("train", 6), ("val", 2), ("test", 0))), progress=False)
    return root


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_cpu_stage3_end_to_end(synth, tmp_path):
    out = tmp_path / "stage3"
    args = ["train", str(DEMO_CONFIGS / "stage3.yaml"), "model.init=preset:smolrgpt-tiny",
            f"data.train={synth / 'train.json'}", f"data.val={synth / 'val.json'}", f"train.output_dir={out}",
            "schedule.max_steps=4", "train.batch_size=8", "train.eval_every=2", "checkpoint.save_every=2",
            "train.accuracy_samples=6", "train.max_new_tokens=8", "optim.lr.vision_tower=1e-3",
            # each question once and no lead-in, so that 4 steps of 8 cover the 30 questions exactly
            *(f"data.category_repeats.{c}=1.0" for c in CATEGORIES), "data.lead_in.share=0",
            "data.lead_in.min_steps=0", *FAST]
    assert main(args) == 0
    for name in ("config.yaml", "metrics.jsonl", "training_curves.png", "DONE", "last/model.safetensors",
                 "last/trainer_state.pt", "last/manifest.json", "best/model.safetensors", "best/manifest.json"):
        assert (out / name).is_file(), name
    assert Image.open(out / "training_curves.png").size[0] > 100
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # the resolved config, exactly what ran (overrides included)
    saved = load_config(out / "config.yaml")
    assert saved == load_config(DEMO_CONFIGS / "stage3.yaml", args[2:])
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["batch_size"] == 8
    records = _records(out)
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and [r["step"] for r in evals] == [2, 4]
    assert set(train[0]["lr"]) == {"connectors", "refiners", "language_model", "vision_tower"}
    assert sum(r["samples"] for r in train) == 30 and all(r["tokens"] > 0 and r["loss"] > 0 for r in train)
    if HAVE_EVAL:
        acc = evals[-1]["accuracy"]
        assert "overall" in acc and all(0.0 <= v <= 1.0 for v in acc.values())
    model, processor = load_checkpoint(out / "best")
    assert model.config.model_type == "smolrgpt" and processor.max_length == 512
    assert json.loads((out / "DONE").read_text())["steps"] == 4


@needs_synth
def test_captions_from_scene_metadata(synth, tmp_path):
    import shutil

    from smolrgpt.data import open_dataset
    from smolrgpt.errors import SampleError
    from smolrgpt.synth.captions import write_captions

    paths = write_captions(synth)
    records = json.loads(paths["train"].read_text())
    assert len(records) == 6 and paths["val"].name == "captions_val.json"
    first = records[0]
    assert first["conversations"][0]["value"].startswith("<image>\n")
    assert first["conversations"][0]["from"] == "human" and first["conversations"][1]["from"] == "gpt"
    meta = json.loads((synth / "train" / "scenes" / "000000.json").read_text())
    assert first["image"] == f"train/images/{meta['image']}"
    samples = list(open_dataset(paths["train"]))  # the stage-1 reader reads it, images resolve
    assert samples[0].image.is_file() and not samples[0].regions
    captions = {r["conversations"][1]["value"] for r in records}
    assert len(captions) > 1 and all("warehouse" in c or "storage" in c for c in captions)
    # a scene file without a needed field fails clearly, naming the field and the file
    broken = tmp_path / "broken"
    shutil.copytree(synth / "train" / "scenes", broken / "train" / "scenes")
    meta.pop("camera")
    (broken / "train" / "scenes" / "000000.json").write_text(json.dumps(meta))
    with pytest.raises(SampleError, match=r"000000\.json: the scene metadata has no 'camera' field"):
        write_captions(broken, ["train"])


@needs_synth
def test_curriculum_runs_the_three_stages_and_skips_finished_ones(synth, tmp_path, capsys):
    from smolrgpt.synth.captions import write_captions

    write_captions(synth)
    out = tmp_path / "cpu"
    args = ["curriculum", "--out", str(out), *(str(DEMO_CONFIGS / f"stage{i}.yaml") for i in (1, 2, 3)),
            f"stage1.data.train={synth / 'captions.json'}", f"stage1.data.val={synth / 'captions_val.json'}",
            f"stage2.data.train={synth / 'train.json'}", f"stage2.data.val={synth / 'val.json'}",
            f"stage3.data.train={synth / 'train.json'}", f"stage3.data.val={synth / 'val.json'}",
            "schedule.max_steps=2", "train.batch_size=8", "train.eval_every=0", "stage3.train.accuracy_samples=2",
            "train.max_new_tokens=4", "logging.tensorboard=false", "logging.plot=false", *FAST]
    assert main(args) == 0
    for stage in (1, 2, 3):
        assert (out / f"stage{stage}" / "DONE").is_file()
    assert load_config(out / "stage2" / "config.yaml").model.init == str(out / "stage1" / "best")
    assert load_config(out / "stage3" / "config.yaml").model.init == str(out / "stage2" / "best")
    assert load_config(out / "stage1" / "config.yaml").train.stage == 1
    capsys.readouterr()
    assert main(args) == 0  # everything finished: all three stages are skipped
    text = capsys.readouterr().out
    assert text.count("is finished; skipping") == 3
    assert json.loads(text.strip().splitlines()[-1])["final_checkpoint"] == str(out / "stage3" / "best")


@needs_eval
def test_accuracy_by_category_uses_the_normaliser_and_the_official_rule():
    from smolrgpt.training.evaluate import accuracy_by_category

    results = [
        ("distance", "How far is the pallet <mask> from the pallet <mask>?", 3.2, "It is 3.25 meters away."),
        ("distance", "How far is the pallet <mask> from the pallet <mask>?", 3.2, "It is 9 meters away."),
        ("count", "How many pallets are in the buffer region <mask>?", 3, "There are three pallets."),
    ]
    acc = accuracy_by_category(results)
    assert acc["distance"] == 0.5 and acc["count"] == 1.0 and acc["overall"] == 0.75


def test_wandb_is_off_by_default_and_a_clear_error_when_missing(tmp_path, monkeypatch):
    import sys

    from smolrgpt.errors import ConfigError
    from smolrgpt.training.monitor import Monitor

    config = load_config(DEMO_CONFIGS / "stage3.yaml", ["logging.wandb=yes", "logging.progress=no"])
    assert load_config(DEMO_CONFIGS / "stage3.yaml").logging.wandb is False
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match="wandb is not installed: `pip install wandb`"):
        Monitor(tmp_path, config.logging, config.to_dict(), True, 10, 0, resumed=False)
    assert not (tmp_path / "metrics.jsonl").exists()
