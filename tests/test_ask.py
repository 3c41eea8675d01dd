"""`smolrgpt ask`: regions in command-line order across --mask/--rle/--box, answers equal the engine's,
--json and --show, and one-line errors for bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from smolrgpt import cli
from smolrgpt.data.sample import Region
from smolrgpt.visualize import draw_regions

from serving_support import frame_arrays, lively_checkpoint, load_engine

Q3 = "Which of the pallets <mask> <mask> <mask> is the leftmost?"


@pytest.fixture(scope="module")
def engine():
    return load_engine()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ask")
    rgb, depth = frame_arrays(4)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(depth).save(root / "depth.png")
    m0 = np.zeros((90, 160), np.uint8)
    m0[10:50, 20:70] = 255
    Image.fromarray(m0).save(root / "m0.png")
    m1 = np.zeros((90, 160), np.uint8)
    m1[40:85, 100:150] = 1
    enc = coco_mask.encode(np.asfortranarray(m1))
    rle = {"size": [90, 160], "counts": enc["counts"].decode()}
    (root / "m1.json").write_text(json.dumps(rle))
    (root / "two.json").write_text(json.dumps([rle, rle]))
    return {"root": root, "rgb": root / "rgb.png", "depth": root / "depth.png", "m0": root / "m0.png",
            "m1": root / "m1.json", "two": root / "two.json", "rle": rle, "mask0": m0}


def base(files, *extra):
    return ["ask", "--model", str(lively_checkpoint()), "--image", str(files["rgb"]), "--depth", str(files["depth"]),
            "--max-new-tokens", "8", *extra]


def test_regions_keep_command_line_order_across_flags(files):
    argv = base(files, "--box", "1,2,30,40", "--mask", str(files["m0"]), "--rle", str(files["m1"]), "--box", "5,5,9,9", Q3)
    args = cli.build_parser(only="ask").parse_args(argv)
    assert args.regions == [("box", "1,2,30,40"), ("mask", str(files["m0"])), ("rle", str(files["m1"])),
                            ("box", "5,5,9,9")]
    assert args.question == Q3 and args.depth_polarity == "far_bright"


@pytest.mark.parametrize("order", ["box-mask-rle", "rle-box-mask"])
def test_answer_equals_the_engine(files, capsys, order, engine):
    flags = {"box": ["--box", "100,5,150,40"], "mask": ["--mask", str(files["m0"])], "rle": ["--rle", str(files["m1"])]}
    regions = {"box": Region("box", [100, 5, 150, 40]), "mask": Region("mask", files["mask0"]),
               "rle": Region("rle", files["rle"])}
    kinds = order.split("-")
    assert cli.main(base(files, *sum((flags[k] for k in kinds), []), Q3)) == 0
    want = engine.ask(engine.frame(str(files["rgb"]), str(files["depth"])), Q3, [regions[k] for k in kinds])
    assert capsys.readouterr().out.splitlines() == [
        f"answer:            {want.text}", f"category:          {want.category}",
        f"normalized answer: {want.normalized_answer}"]


def test_json_show_and_polarity(files, capsys, engine):
    out_png = files["root"] / "shown.png"
    argv = base(files, "--depth-polarity", "near_bright", "--rle", str(files["two"]), "--box", "0,0,40,30",
                "--json", "--show", str(out_png), Q3)
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    regions = [Region("rle", files["rle"]), Region("rle", files["rle"]), Region("box", [0, 0, 40, 30])]
    want = engine.ask(engine.frame(str(files["rgb"]), str(files["depth"]), "near_bright"), Q3, regions)
    assert result == {"question": Q3, "answer": want.text, "category": want.category,
                      "normalized_answer": want.normalized_answer, "num_regions": 3, "show": str(out_png)}
    shown = np.asarray(Image.open(out_png))
    assert np.array_equal(shown, np.asarray(draw_regions(str(files["rgb"]), regions)))
    assert (shown != np.asarray(Image.open(files["rgb"]))).any()


def test_question_without_regions_needs_no_depth(files, capsys, engine):
    argv = ["ask", "--model", str(lively_checkpoint()), "--image", str(files["rgb"]), "--max-new-tokens", "8",
            "--json", "Describe the scene."]
    assert cli.main(argv) == 0
    want = engine.ask(engine.frame(str(files["rgb"])), "Describe the scene.")
    assert json.loads(capsys.readouterr().out)["answer"] == want.text


ERRORS = [
    ("missing image", lambda f: ["ask", "--model", str(lively_checkpoint()), "--image", str(f["root"] / "nope.png"),
                                 "Describe."], "--image file not found: {root}/nope.png"),
    ("missing depth", lambda f: ["ask", "--model", str(lively_checkpoint()), "--image", str(f["rgb"]), "--depth",
                                 str(f["root"] / "d.png"), "Describe."], "--depth file not found: {root}/d.png"),
    ("missing mask", lambda f: base(f, "--mask", str(f["root"] / "m9.png"), "Where is <mask>?"),
     "mask file not found: {root}/m9.png"),
    ("missing RLE file", lambda f: base(f, "--rle", str(f["root"] / "r.json"), "Where is <mask>?"),
     "RLE file not found: {root}/r.json"),
    ("RLE file not JSON", lambda f: base(f, "--rle", str(f["rgb"]), "Where is <mask>?"), None),
    ("RLE file not RLE", lambda f: base(f, "--rle", str(f["root"] / "bad.json"), "Where is <mask>?"),
     "{root}/bad.json must hold a COCO RLE dict {{\"size\": [h, w], \"counts\": ...}} or a list of them"),
    ("tag/region mismatch", lambda f: base(f, "--box", "1,1,9,9", "--box", "2,2,8,8", "Where is <mask>?"),
     "the question has 1 <mask> tag(s) but 2 region(s) were given (--mask/--rle/--box, in command-line order)"),
    ("bad box syntax", lambda f: base(f, "--box", "1,2,3", "Where is <mask>?"),
     "bad --box '1,2,3': expected x1,y1,x2,y2 (4 numbers, pixels)"),
    ("box not numbers", lambda f: base(f, "--box", "a,b,c,d", "Where is <mask>?"),
     "bad --box 'a,b,c,d': expected x1,y1,x2,y2 (4 numbers, pixels)"),
    ("box upside down", lambda f: base(f, "--box", "9,9,1,1", "Where is <mask>?"),
     "bad --box '9,9,1,1': x2 must be greater than x1 and y2 greater than y1"),
    ("regions without depth", lambda f: ["ask", "--model", str(lively_checkpoint()), "--image", str(f["rgb"]),
                                         "--box", "1,1,9,9", "Where is <mask>?"], "a question with regions needs --depth"),
    ("RGB/depth size mismatch", lambda f: ["ask", "--model", str(lively_checkpoint()), "--image", str(f["rgb"]),
                                           "--depth", str(f["root"] / "small.png"), "Describe."],
     "sample 'rgb.png': RGB is 90x160 but depth is 40x40"),
    ("box outside the image", lambda f: base(f, "--box", "500,500,600,600", "Where is <mask>?"),
     "sample 'rgb.png': region 0 (box): box [500.0, 500.0, 600.0, 600.0] is empty inside the 90x160 image"),
    ("not a checkpoint", lambda f: ["ask", "--model", str(f["root"]), "--image", str(f["rgb"]), "Describe."],
     "{root} is not a complete SmolRGPT checkpoint: missing config.json, processor_config.json, "
     "tokenizer_config.json, model.safetensors"),
]


@pytest.mark.parametrize("name,argv,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_gives_one_clear_line(files, capsys, name, argv, message):
    (files["root"] / "bad.json").write_text(json.dumps({"counts": "abc"}))
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(files["root"] / "small.png")
    assert cli.main(argv(files)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smolrgpt ask: error: ")
    if message is not None:
        assert lines[0] == "smolrgpt ask: error: " + message.format(root=files["root"])
    else:
        assert lines[0].startswith(f"smolrgpt ask: error: {files['rgb']} is not valid JSON (")
