"""`smolrgpt ask`: one question about one RGB-D frame from the command line.

    smolrgpt ask --model ckpt --image rgb.png --depth depth.png --mask m0.png --box 10,20,90,80 \
        "How far is the pallet <mask> from the pallet <mask>?"

Regions come from --mask (a mask image), --rle (a JSON file holding one COCO RLE dict or a list of them)
and --box (x1,y1,x2,y2), repeatable and mixed; they are numbered in the order they appear on the command
line, and the k-th <mask> of the question refers to region k.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from smolrgpt.data.sample import MASK_TAG, Region
from smolrgpt.errors import SmolRGPTError
from smolrgpt.modeling.precision_modes import PRECISION_HELP, PRECISIONS


class AskError(SmolRGPTError, ValueError):
    """Bad command-line input for `ask` (missing file, bad box, tag/region mismatch, ...)."""


class _RegionAction(argparse.Action):
    """Appends (kind, value) to one shared list, so regions keep their command-line order across flags."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def add_ask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", help='the question; its k-th "<mask>" refers to the k-th region given')
    p.add_argument("--model", required=True, metavar="CKPT", help="checkpoint folder")
    p.add_argument("--image", required=True, metavar="RGB", help="RGB image file")
    p.add_argument("--depth", metavar="DEPTH", help="depth map file (needed when the question has regions)")
    p.add_argument("--depth-polarity", choices=["far_bright", "near_bright"], default="far_bright",
                   help="far_bright: bright = far (warehouse data, default); near_bright: bright = near")
    p.set_defaults(regions=[])
    p.add_argument("--mask", dest="regions", action=_RegionAction, const="mask", metavar="PNG",
                   help="a region as a mask image of the image's size (non-zero = inside); repeatable")
    p.add_argument("--rle", dest="regions", action=_RegionAction, const="rle", metavar="FILE.json",
                   help="region(s) from a JSON file: one COCO RLE dict or a list of them; repeatable")
    p.add_argument("--box", dest="regions", action=_RegionAction, const="box", metavar="X1,Y1,X2,Y2",
                   help="a region as a box in pixels (x2, y2 exclusive); repeatable")
    p.add_argument("--show", metavar="OUT.png", help="save the image with the numbered regions drawn on it")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit in tokens")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help=PRECISION_HELP)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core); 1 is faster for tiny models "
                        "and on busy machines")
    p.add_argument("--overwrite", action="store_true", help="let --show replace an existing file")


def _region(spec, where: str) -> Region:
    from smolrgpt.processing.regions import RegionDecodeError, parse_region  # torch: only when asked

    try:
        return parse_region(spec, where)
    except RegionDecodeError as exc:
        raise AskError(str(exc)) from None


def parse_box(text: str) -> Region:
    parts = [s.strip() for s in text.split(",")]
    try:
        x1, y1, x2, y2 = (float(s) for s in parts)
    except ValueError:
        raise AskError(f"bad --box {text!r}: expected x1,y1,x2,y2 (4 numbers, pixels)") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise AskError(f"bad --box {text!r}: the coordinates must be finite numbers (no nan or inf)")
    if not (x2 > x1 and y2 > y1):
        raise AskError(f"bad --box {text!r}: x2 must be greater than x1 and y2 greater than y1")
    return _region([x1, y1, x2, y2], f"--box {text!r}")


def read_rle_file(path: str) -> list[Region]:
    file = Path(path)
    if file.is_dir():
        raise AskError(f"--rle {path} is a folder, not a JSON file")
    if not file.is_file():
        raise AskError(f"RLE file not found: {path}")
    try:
        data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AskError(f"{path} is not valid JSON ({exc})") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise AskError(f"{path} holds an empty list: it has no region (give one COCO RLE dict or a list of them)")
    if not all(isinstance(d, dict) and "size" in d and "counts" in d for d in items):
        raise AskError(f"{path} must hold a COCO RLE dict {{\"size\": [h, w], \"counts\": ...}} or a list of them")
    return [_region({"rle": d}, f"{path} region {i}") for i, d in enumerate(items)]


def collect_regions(items: list[tuple[str, str]]) -> list[Region]:
    """Regions in command-line order; files are checked here so errors name the flag and the file."""
    regions: list[Region] = []
    for kind, value in items:
        if kind == "box":
            regions.append(parse_box(value))
        elif kind == "rle":
            regions.extend(read_rle_file(value))
        else:
            if Path(value).is_dir():
                raise AskError(f"--mask {value} is a folder, not an image file")
            if not Path(value).is_file():
                raise AskError(f"mask file not found: {value}")
            regions.append(_region(value, f"--mask {value}"))
    return regions


def run_ask(args) -> int:
    import torch

    from smolrgpt.engine import SmolRGPT
    from smolrgpt.modeling.checkpoint import quiet_loading

    if not args.question.strip():
        raise AskError("the question is empty")
    for flag, path in (("--image", args.image), ("--depth", args.depth)):
        if path is not None and Path(path).is_dir():
            raise AskError(f"{flag} {path} is a folder, not an image file")
        if path is not None and not Path(path).is_file():
            raise AskError(f"{flag} file not found: {path}")
    if args.max_new_tokens < 1:
        raise AskError("--max-new-tokens must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise AskError("--threads must be >= 1")
    regions = collect_regions(args.regions)
    tags = args.question.count(MASK_TAG)
    if tags != len(regions):
        raise AskError(f"the question has {tags} {MASK_TAG} tag(s) but {len(regions)} region(s) were given "
                       "(--mask/--rle/--box, in command-line order)")
    if regions and args.depth is None:
        raise AskError("a question with regions needs --depth")
    if args.show and not Path(args.show).resolve().parent.is_dir():
        raise AskError(f"--show: folder not found: {Path(args.show).parent}")
    if args.show:
        from smolrgpt.atomic import claim_output

        claim_output(args.show, "ask", overwrite=args.overwrite, folder=False, flag="--show")
    if args.threads:
        torch.set_num_threads(args.threads)

    with quiet_loading():
        try:
            engine = SmolRGPT.load(args.model, device=args.device, precision=args.precision,
                                   max_new_tokens=args.max_new_tokens)
        except ValueError as exc:  # a precision the device cannot run
            raise AskError(str(exc)) from None
    frame = engine.frame(args.image, args.depth, depth_polarity=args.depth_polarity, frame_id=Path(args.image).name)
    answer = engine.ask(frame, args.question, regions)

    if args.show:
        import io

        from smolrgpt.atomic import write_bytes_atomic
        from smolrgpt.visualize import draw_regions

        try:
            from PIL import Image

            buffer = io.BytesIO()  # encoded in memory, then written atomically like every output
            kind = Image.registered_extensions().get(Path(args.show).suffix.lower(), "PNG")
            draw_regions(args.image, regions).save(buffer, format=kind)
            write_bytes_atomic(args.show, buffer.getvalue())
        except (OSError, ValueError, KeyError) as exc:
            raise AskError(f"--show: cannot write {args.show} ({exc})") from None
    if args.json:
        print(json.dumps({"question": args.question, "answer": answer.text, "category": answer.category,
                          "normalized_answer": answer.normalized_answer, "num_regions": len(regions),
                          "show": args.show}, ensure_ascii=False))
    else:
        print(f"answer:            {answer.text}")
        print(f"category:          {answer.category}")
        print(f"normalized answer: {answer.normalized_answer}")
        if args.show:
            print(f"regions drawn in:  {args.show}")
    sys.stdout.flush()
    return 0
