import json

from smolrgpt.cli import main


def test_info_json_paper_preset(capsys):
    assert main(["info", "--preset", "smolrgpt-600m", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_params"] == 475_697_280
    assert info["trainable_params_by_stage"] == {"1": 2_949_120, "2": 28_030_080, "3": 389_854_080}
    assert set(info["modules"]) == {"vision_tower", "rgb_connector", "depth_connector", "rgb_refiner",
                                    "depth_refiner", "language_model"}


def test_info_table(capsys):
    assert main(["info", "--preset", "smolrgpt-135m"]) == 0
    out = capsys.readouterr().out
    assert "smolrgpt-135m: 231.87M parameters" in out and "language_model" in out


def test_init_then_info_on_the_checkpoint(tmp_path, capsys):
    assert main(["init", "--preset", "smolrgpt-tiny", "--out", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    assert main(["info", "--model", str(tmp_path / "ck"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_size"] == 631 and info["mask_grid"] == 64


def test_init_is_seeded(tmp_path):
    from safetensors.torch import load_file

    for name in ("a", "b"):
        assert main(["init", "--out", str(tmp_path / name), "--seed", "3"]) == 0
    a, b = load_file(str(tmp_path / "a/model.safetensors")), load_file(str(tmp_path / "b/model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_hello_answers(capsys):
    assert main(["hello"]) == 0
    out = capsys.readouterr().out
    assert "Q: How far is the pallet <mask> from the pallet <mask>?" in out and "A (random weights" in out


def test_bad_checkpoint_is_one_clear_line(tmp_path, capsys):
    assert main(["info", "--model", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"smolrgpt info: error: checkpoint folder not found: {tmp_path / 'missing'}"
