"""Training configs: YAML + key=value overrides, validated; the shipped stage configs hold the paper's values."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from smolrgpt.errors import ConfigError
from smolrgpt.training.config import load_config, parse_bool
from training_helpers import CONFIGS, DEMO_CONFIGS


def _write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_in_file_is_named(tmp_path):
    path = _write(tmp_path, "data: {train: x.json}\ntrain: {stag: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown setting train\.stag"):
        load_config(path)


def test_unknown_section_and_override_keys_are_named(tmp_path):
    path = _write(tmp_path, "data: {train: x.json}\n")
    with pytest.raises(ConfigError, match=r"unknown setting optimizer"):
        load_config(path, ["optimizer.lr=1"])
    with pytest.raises(ConfigError, match=r"unknown setting optim\.lr\.vision"):
        load_config(path, ["optim.lr.vision=1e-4"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(path, ["train.stage"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config(path, ["optim.lr=1e-4"])


@pytest.mark.parametrize("text,expected", [("true", True), ("False", False), ("yes", True), ("no", False),
                                           ("1", True), ("0", False), ("ON", True), ("off", False)])
def test_booleans_parse_properly(tmp_path, text, expected):
    path = _write(tmp_path, "data: {train: x.json}\n")
    assert load_config(path, [f"logging.tensorboard={text}"]).logging.tensorboard is expected
    assert parse_bool(text, "k") is expected


def test_bad_bool_and_bad_types_are_errors_naming_the_key(tmp_path):
    path = _write(tmp_path, "data: {train: x.json}\n")
    with pytest.raises(ConfigError, match=r"logging\.wandb: expected a boolean"):
        load_config(path, ["logging.wandb=maybe"])
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected an integer"):
        load_config(path, ["train.batch_size=12.5"])
    with pytest.raises(ConfigError, match=r"optim\.lr\.connectors: expected a number"):
        load_config(path, ["optim.lr.connectors=fast"])
    with pytest.raises(ConfigError, match=r"train\.precision: expected one of auto, fp32, bf16"):
        load_config(path, ["train.precision=fp16"])
    with pytest.raises(ConfigError, match=r"train\.stage: expected an integer"):
        load_config(_write(tmp_path, "data: {train: x.json}\ntrain: {stage: true}\n"))
    with pytest.raises(ConfigError, match=r"^train: expected a mapping"):
        load_config(_write(tmp_path, "data: {train: x.json}\ntrain: 3\n"))


def test_values_are_converted_and_checked(tmp_path):
    # YAML 1.1 reads `1e-4` as text: accepted as a number; null clears an optional setting.
    path = _write(tmp_path, "data: {train: x.json, max_val_samples: 5}\noptim: {lr: {connectors: 1e-4}}\n")
    config = load_config(path, ["data.max_val_samples=null", "schedule.max_steps=7", "train.stage=2"])
    assert config.optim.lr.connectors == 1e-4 and config.data.max_val_samples is None
    assert config.schedule.max_steps == 7 and config.train.stage == 2
    with pytest.raises(ConfigError, match="must be a multiple of train.grad_accum"):
        load_config(path, ["train.batch_size=10", "train.grad_accum=4"])
    with pytest.raises(ConfigError, match="train.stage must be 1, 2 or 3"):
        load_config(path, ["train.stage=4"])
    with pytest.raises(ConfigError, match=r"data\.train is required"):
        load_config(_write(tmp_path, "data:\n  train: ???\n"))
    path = _write(tmp_path, "data: {train: x.json}\n")
    assert load_config(path, ["data.category_repeats.left_right=2.5"]).data.category_repeats.left_right == 2.5
    with pytest.raises(ConfigError, match=r"unknown setting data\.category_repeats\.leftright"):
        load_config(path, ["data.category_repeats.leftright=2"])
    assert load_config(path, ["data.answer_target=normalized"]).data.answer_target == "normalized"
    assert load_config(path, ["data.answer_target=reasoned"]).data.answer_target == "reasoned"
    with pytest.raises(ConfigError, match=r"data\.answer_target: expected one of conversation, normalized, reasoned, got 'short'"):
        load_config(path, ["data.answer_target=short"])
    with pytest.raises(ConfigError, match=r"data\.category_repeats\.\* must be finite and >= 0"):
        load_config(path, ["data.category_repeats.mcq=-1"])


def test_paper_stage_configs(tmp_path):
    expected = {  # stage: (lr connectors, refiners, LM, effective batch, epochs, format)
        1: (1e-4, None, None, 240, 20, "llava"),
        2: (5e-5, 1e-4, None, 224, 1, "osd"),
        3: (5e-5, 5e-5, 5e-5, 112, 20, "track3"),
    }
    for stage, (conn, ref, lm, batch, epochs, fmt) in expected.items():
        raw = yaml.safe_load((CONFIGS / f"stage{stage}.yaml").read_text())
        with pytest.raises(ConfigError, match="is required"):  # data paths are placeholders
            load_config(CONFIGS / f"stage{stage}.yaml")
        fills = [f"{k}=/somewhere" for k in ("data.train", "data.val", "data.images_root", "data.depths_root",
                                             "model.init") if _get(raw, k) == "???"]
        c = load_config(CONFIGS / f"stage{stage}.yaml", fills)
        assert c.train.stage == stage and c.train.batch_size == batch and c.schedule.epochs == epochs
        assert c.optim.lr.connectors == conn and (ref is None or c.optim.lr.refiners == ref)
        assert lm is None or c.optim.lr.language_model == lm
        assert (c.train.grad_accum, c.data.max_length, c.train.seed) == (4, 512, 0)
        assert (c.schedule.warmup_ratio, c.schedule.min_lr_ratio) == (0.03, 0.1)
        assert (c.optim.weight_decay, c.optim.max_grad_norm, c.train.precision) == (0.01, 1.0, "auto")
        assert c.data.format == fmt and c.logging.wandb is False


def test_demo_stage_configs_load_and_use_the_tiny_model():
    for stage in (1, 2, 3):
        c = load_config(DEMO_CONFIGS / f"stage{stage}.yaml")
        assert c.train.stage == stage and (c.train.batch_size, c.train.grad_accum) == (16, 1)
        assert stage != 1 or c.model.init == "preset:smolrgpt-tiny"
        assert c.optim.lr.vision_tower == 0  # frozen in every stage, as in the paper
    # stage 3: the from-scratch language model learns short answers at 1e-3, the visual side slowly (keeps
    # region positions), each category about a quarter of the questions
    c = load_config(DEMO_CONFIGS / "stage3.yaml")
    lr, repeats = c.optim.lr, c.data.category_repeats
    assert lr.language_model == 1e-3 and lr.connectors == lr.refiners == 1e-4
    assert c.data.answer_target == "normalized"
    assert (repeats.left_right, repeats.count, repeats.distance, repeats.mcq) == (1.8, 1.35, 0.55, 1.15)
    lead_in = c.data.lead_in  # left/right alone first: in the mix it was learned late or not at all
    assert (lead_in.share, lead_in.min_steps, lead_in.max_share) == (0.2, 500, 0.5)
    assert dataclasses.asdict(lead_in.repeats) == {"left_right": 1.0, "count": 0.0, "distance": 0.0, "mcq": 0.0}
    # a fifth of a long stage; 500 steps in a short one; never more than half
    assert [lead_in.steps(n) for n in (10_000, 2_000, 874, 1)] == [2_000, 500, 437, 1]


def test_resolved_config_round_trips(tmp_path):
    c = load_config(DEMO_CONFIGS / "stage3.yaml", ["train.batch_size=8"])
    again = load_config(_write(tmp_path, c.to_yaml()))
    assert again == c


def _get(raw, dotted):
    for part in dotted.split("."):
        raw = (raw or {}).get(part)
    return raw


def test_a_base_file_is_read_first_and_this_files_settings_go_over_it(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.yaml").write_text(
        "data: {train: a.json, max_length: 256}\noptim: {lr: {connectors: 1.0e-4, refiners: 2.0e-4}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: recipes/base.yaml\noptim: {lr: {refiners: 3.0e-4}}\ntrain: {batch_size: 8}\n")
    c = load_config(child, ["data.max_length=128"])
    assert (c.data.train, c.data.max_length, c.train.batch_size) == ("a.json", 128, 8)
    assert (c.optim.lr.connectors, c.optim.lr.refiners) == (1e-4, 3e-4)  # merged key by key, not section by section
    (tmp_path / "grandchild.yaml").write_text("base: child.yaml\ntrain: {batch_size: 4}\n")
    c = load_config(tmp_path / "grandchild.yaml")
    assert (c.train.batch_size, c.optim.lr.refiners, c.data.train) == (4, 3e-4, "a.json")


def test_a_bad_base_is_an_error_naming_the_file(tmp_path):
    def fails(text, message):
        path = _write(tmp_path, text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)

    fails("base: missing.yaml\n", r"c\.yaml: base missing\.yaml not found")
    fails("base: [a.yaml]\n", r"c\.yaml: base must be the path of another config file, got \['a\.yaml'\]")
    fails("base: c.yaml\n", r"c\.yaml: base c\.yaml leads back to itself")
    (tmp_path / "other.yaml").write_text("base: c.yaml\n")
    fails("base: other.yaml\n", r"other\.yaml: base c\.yaml leads back to itself")
    (tmp_path / "typo.yaml").write_text("train: {stag: 3}\n")
    fails("base: typo.yaml\n", r"unknown setting train\.stag")  # unknown keys in a base stay errors
    (tmp_path / "good.yaml").write_text("train: {stage: 3}\n")
    fails("base: good.yaml\nbase2: x\n", r"unknown setting base2")
    from smolrgpt.demo.config import load_demo_config

    with pytest.raises(ConfigError, match=r"unknown setting base"):  # demo settings have no base
        load_demo_config(_write(tmp_path, "base: x.yaml\n"))


def test_the_135m_demo_stages_are_the_packaged_ones_but_for_the_language_models_rate():
    from smolrgpt.training.config import differences

    for stage in (1, 2, 3):
        packaged = load_config(DEMO_CONFIGS / f"stage{stage}.yaml")
        c = load_config(CONFIGS / "demo-135m" / f"stage{stage}.yaml")
        assert differences(packaged, c) == ([] if stage < 3 else ["optim.lr.language_model"])
    assert c.optim.lr.language_model == 5e-5 and packaged.optim.lr.language_model == 1e-3


def test_the_lr_schema_is_the_families_that_modules_train_at():
    from smolrgpt.modeling.families import LR_FAMILIES
    from smolrgpt.modeling.stages import MODULE_FAMILY, TOP_LEVEL_MODULES
    from smolrgpt.training.config import LearningRates

    fields = {f.name: f.default for f in dataclasses.fields(LearningRates)}
    assert set(fields) == set(MODULE_FAMILY.values())
    assert fields == {"connectors": 1e-4, "refiners": 1e-4, "language_model": 5e-5, "vision_tower": 0.0}
    assert fields == {family: entry.default_lr for family, entry in LR_FAMILIES.items()}
    assert set(MODULE_FAMILY) == set(TOP_LEVEL_MODULES)  # every module that can train has a family
    # the region extensions that train declare a family of the table (the tiny preset's: the language model's)
    assert MODULE_FAMILY["region_contents"] == MODULE_FAMILY["region_comparisons"] == "language_model"
    c = load_config(None, ["data.train=x.json", "optim.lr.refiners=3e-4"])
    assert isinstance(c.optim.lr.refiners, float) and c.optim.lr.refiners == 3e-4 and c.optim.lr.connectors == 1e-4
    assert yaml.safe_load(c.to_yaml())["optim"]["lr"] == {**fields, "refiners": 3e-4}


def test_an_unknown_lr_family_is_an_error_naming_it(tmp_path):
    known = r"\(known in optim\.lr: connectors, language_model, refiners, vision_tower\)"
    with pytest.raises(ConfigError, match=r"unknown setting optim\.lr\.region_contents " + known):
        load_config(None, ["data.train=x.json", "optim.lr.region_contents=1e-4"])  # a module, not a family
    with pytest.raises(ConfigError, match=r"unknown setting optim\.lr\.regions " + known):
        load_config(_write(tmp_path, "data: {train: x.json}\noptim: {lr: {regions: 1.0e-3}}\n"))
    with pytest.raises(ConfigError, match=r"^optim\.lr\.\* must be >= 0$"):
        load_config(None, ["data.train=x.json", "optim.lr.vision_tower=-1e-5"])
    with pytest.raises(ConfigError, match=r"^optim\.lr: expected a mapping of settings, got 0\.001$"):
        load_config(_write(tmp_path, "data: {train: x.json}\noptim: {lr: 1.0e-3}\n"))


def test_lr_keys_are_exactly_the_families_some_module_uses():
    from smolrgpt.modeling.stages import family_defaults

    assert family_defaults({"rgb_connector": "connectors", "region_x": "refiners"}) == {"connectors": 1e-4,
                                                                                       "refiners": 1e-4}
    with pytest.raises(ValueError, match=r"^module region_x trains at learning-rate family 'regions', which is "
                                         r"not one of connectors, refiners, language_model, vision_tower"):
        family_defaults({"rgb_connector": "connectors", "region_x": "regions"})
