"""The bad-input corpus, part 2: cases found beyond the issue's list (same fixtures and rules as
test_bad_inputs.py: exit status and the message naming what is wrong; no traceback)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bad_inputs_support import run_cli
from test_bad_inputs import check, p, ws  # noqa: F401 - ws is a fixture used by name


# --------------------------------------------------------------------- found beyond the list
def test_predict_images_root_not_found(ws, capsys, tmp_path):
    rc, _, err = run_cli(["predict", "--model", ws["ckpt"], "--data", ws["split"], "--out", tmp_path / "o",
                          "--images-root", tmp_path / "nowhere", "--no-progress"], capsys)
    check(rc, err, 2, "--images-root", "nowhere: folder not found")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["predict", "init", "synth"])
def test_an_output_the_system_refuses_is_one_line(ws, capsys, command):
    out = "/proc/smolrgpt-cannot-write-here"
    argv = {"predict": ["predict", "--model", ws["ckpt"], "--data", ws["split"], "--out", out, "--no-progress"],
            "init": ["init", "--out", out],
            "synth": ["synth", "--out", out, "--frames", "1", "--size", "160x96", "--quiet"]}[command]
    rc, _, err = run_cli(argv, capsys)
    check(rc, err, 2, "cannot use /proc/smolrgpt-cannot-write-here")


def test_serve_bad_host_and_port_in_use(ws, capsys):
    import socket

    rc, _, err = run_cli(["serve", "--model", ws["ckpt"], "--host", "256.1.1.1"], capsys)
    check(rc, err, 2, "cannot listen on 256.1.1.1:8000")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, _, err = run_cli(["serve", "--model", ws["ckpt"], "--port", port], capsys)
        check(rc, err, 2, f"cannot listen on 127.0.0.1:{port}", "in use")


@pytest.mark.parametrize("bad,needle", [(["--max-batch", "0"], "--max-batch must be >= 1"),
                                        (["--port", "70000"], "--port must be 0..65535"),
                                        (["--threads", "0"], "--threads must be >= 1"),
                                        (["--max-request-mb", "0"], "--max-request-mb > 0"),
                                        (["--device", "potato"], "is not a torch device"),
                                        (["--max-new-tokens", "100000000"], "more than the model's context")])
def test_serve_bad_options(ws, capsys, bad, needle):
    rc, _, err = run_cli(["serve", "--model", ws["ckpt"], "--port", "0", *bad], capsys)
    check(rc, err, 2, needle)


def test_ctrl_c_is_one_line(ws, capsys, monkeypatch):
    import smolrgpt.cli.model as commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "run_info", interrupted)
    rc, _, err = run_cli(["info"], capsys)
    assert rc == 130 and err == "smolrgpt info: interrupted\n"


def test_ask_decompression_bomb_and_mask_size(ws, capsys, tmp_path):
    huge = tmp_path / "huge.png"
    Image.fromarray(np.zeros((14000, 14000), np.uint8)).save(huge)
    rc, _, err = run_cli(["ask", "--model", ws["ckpt"], "--image", huge, "Q?"], capsys)
    check(rc, err, 2, "huge.png", "exceeds limit")
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
    rc, _, err = run_cli(["ask", "--model", ws["ckpt"], "--image", ws["rgb"], "--depth", ws["depth"], "--mask", small,
                          "Q <mask>?"], capsys)
    check(rc, err, 2, "mask size 10x10 differs from the image size 90x160")


def test_eval_gt_file_not_found(ws, capsys, tmp_path):
    rc, _, err = run_cli(["eval", "--model", ws["ckpt"], "--data", ws["test_split"], "--out", tmp_path / "e",
                          "--gt", tmp_path / "nope.json", "--no-progress"], capsys)
    check(rc, err, 2, "nope.json")


@pytest.mark.parametrize("bad,needle", [(["--model", "@nope"], "checkpoint folder not found"),
                                        (["--model", "@rgb"], "is a file, not a checkpoint folder"),
                                        (["--preset", "smolrgpt-huge"], "invalid choice: 'smolrgpt-huge'"),
                                        (["--jobs", "0"], "--jobs and --samples-per-shard must be at least 1"),
                                        (["--out", "@foreign"], "already holds a folder (notes.txt)")])
def test_data_prepare_refuses_bad_input(ws, capsys, tmp_path, bad, needle):
    bad = [str(p(ws, a[1:])) if a.startswith("@") else a for a in bad]
    argv = ["data", "prepare", ws["split"], "--no-progress", *bad]
    if "--out" not in bad:
        argv += ["--out", tmp_path / "cache"]
    rc, _, err = run_cli(argv, capsys)
    check(rc, err, 2, needle)


def test_hello_negative_seed(capsys):
    rc, _, err = run_cli(["hello", "--seed", "-1"], capsys)
    check(rc, err, 2, "--seed must be >= 0, got -1")


def test_records_with_bad_regions_are_skipped_not_fatal(ws, capsys, tmp_path):
    """Tags and regions that disagree, an RLE of another size and a missing image: each record reported by
    id, data record and image; the good ones answered; exit 1 (and 2 with --strict, at the first)."""
    records = json.loads(ws["split"].read_text())
    tags, size, image = (json.loads(json.dumps(records[k % len(records)])) for k in range(3))
    tags.update(id="bad-tags", rle=tags["rle"][:1])
    size["id"] = "bad-size"
    size["rle"][0]["size"] = [10, 10]
    image.update(id="bad-image", image="nope.png")
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps([tags, size, image] + records))
    roots = ["--images-root", ws["split"].parent / "val" / "images", "--depths-root", ws["split"].parent / "val" / "depths"]
    argv = ["predict", "--model", ws["ckpt"], "--data", data, "--no-progress", "--max-new-tokens", "2", *roots]
    rc, out, err = run_cli(argv + ["--out", tmp_path / "o"], capsys)
    assert rc == 1 and "answered 4 question(s)" in out
    assert f"skipped sample 'bad-tags' in {data}#record 0" in err and "2 <mask> tag(s) but the sample has 1" in err
    assert f"skipped sample 'bad-size' in {data}#record 1" in err and "mask size 10x10 differs" in err
    assert f"skipped sample 'bad-image' in {data}#record 2" in err and "nope.png" in err
    assert "3 question(s) skipped" in err
    rc, _, err = run_cli(argv + ["--out", tmp_path / "strict", "--strict"], capsys)
    check(rc, err, 2, "sample 'bad-image'", "--strict stops at the first bad record")


def test_a_deeply_nested_input_is_one_line_in_any_reader(ws, capsys, tmp_path):
    rc, _, err = run_cli(["normalize", "--in", ws["root"] / "deep.jsonl", "--out", tmp_path / "n.jsonl"], capsys)
    check(rc, err, 2, "nested too deeply to read")


CONFIGS = {
    "bad_yaml": ("train: [1\n", "is not valid YAML: expected ',' or ']'"),
    "not_utf8": (b"\xff\xfe", "is not UTF-8 text"),
    "a_list": ("- 1\n- 2\n", "the top level must be a mapping of sections"),
}


@pytest.mark.parametrize("command", ["train", "curriculum", "demo"])
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_bad_config_file_is_one_line(capsys, tmp_path, command, case):
    text, needle = CONFIGS[case]
    config = tmp_path / "config.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    argv = {"train": ["train", config], "curriculum": ["curriculum", "--out", tmp_path / "run", config],
            "demo": ["demo", "--out", tmp_path / "demo", "--config", config]}[command]
    rc, _, err = run_cli(argv, capsys)
    check(rc, err, 2, str(config), needle)
    assert len(err.strip().splitlines()) == 1
