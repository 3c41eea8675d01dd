"""`smolrgpt data VERB ...`: data-file tools.

Each verb is an entry of VERBS: (help, add_arguments, run). Argument definitions live here (they are
cheap); the work modules are imported only when their verb runs. Adding a verb = two functions and
one VERBS line.
"""
from __future__ import annotations

import argparse
import sys

from smolrgpt.data import FORMATS


def _add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="data file: a Track 3 / LLaVA / OSD JSON array, a parquet file or folder, ...")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                   help="reader to use (default: sniffed from the extension and the first record)")
    p.add_argument("--images-root", default=None,
                   help="folder the records' image names are relative to (default: the format's own layout "
                        "when that folder exists; otherwise image checks are skipped and the summary says so)")
    p.add_argument("--depths-root", default=None,
                   help="folder of the depth maps (default: the format's own layout, e.g. Track 3 <split>/depths)")
    p.add_argument("--depth-polarity", default=None, choices=("far_bright", "near_bright"),
                   help="parquet only: polarity for a dataset_name the reader does not know")
    p.add_argument("--max-errors", type=int, default=None, metavar="N",
                   help="stop after N error-level problems (default: check every record)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="check records in N worker processes (mask decoding dominates; default 1)")
    p.add_argument("--strict", action="store_true", help="warnings (e.g. 16-bit Track 3 depth) fail the check too")
    p.add_argument("--json", action="store_true", help="print one JSON report instead of lines and a table")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")


def _run_check(args: argparse.Namespace) -> int:
    from smolrgpt.processing.check import check_dataset, report_json

    options = {"depth_polarity": args.depth_polarity} if args.depth_polarity else {}
    from smolrgpt.errors import ConfigError

    if args.max_errors is not None and args.max_errors < 1:
        raise ConfigError("--max-errors must be at least 1")
    if args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    print_line = None if args.json else (lambda problem: print(problem.line(), flush=False))
    report = check_dataset(args.file, format=args.format, images_root=args.images_root, depths_root=args.depths_root,
                           max_errors=args.max_errors, progress=False if (args.no_progress or args.json) else None,
                           on_problem=print_line, jobs=args.jobs, **options)
    if args.json:
        print(report_json(report, strict=args.strict))
    else:
        print(report.summary(strict=args.strict))
    sys.stdout.flush()
    return 0 if report.ok(strict=args.strict) else 1


def _preset_names() -> list[str]:
    from smolrgpt.modeling.config import PRESETS

    return sorted(PRESETS)


def _add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="data file to prepare (any format `data check` reads, frames stored as files)")
    p.add_argument("--out", required=True, help="cache folder (a rerun resumes an interrupted prepare)")
    p.add_argument("--model", help="checkpoint whose processor settings to use (image size, mask grid)")
    p.add_argument("--preset", default="smolrgpt-600m", choices=_preset_names(),
                   help="preset whose settings to use when no --model")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help="reader (default: sniffed)")
    p.add_argument("--images-root", default=None, help="image folder (default: the format's own layout)")
    p.add_argument("--depths-root", default=None, help="depth folder (default: the format's own layout)")
    p.add_argument("--samples-per-shard", type=int, default=512, help="samples per shard file")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes decoding images and masks")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")


def _run_prepare(args: argparse.Namespace) -> int:
    from smolrgpt.data import open_dataset
    from smolrgpt.errors import ConfigError
    from smolrgpt.modeling.weights import preset_settings
    from smolrgpt.processing.cache import build_cache
    from smolrgpt.processing.processor import SmolRGPTProcessor

    if args.jobs < 1 or args.samples_per_shard < 1:
        raise ConfigError("--jobs and --samples-per-shard must be at least 1")
    if args.model:
        from smolrgpt.modeling.checkpoint import check_checkpoint_folder

        # checked first: from_pretrained would take a missing folder for a Hub id and try the network
        processor = SmolRGPTProcessor.from_pretrained(check_checkpoint_folder(args.model))
    else:
        processor = preset_settings(args.preset)
    samples = open_dataset(args.file, args.format, images_root=args.images_root, depths_root=args.depths_root)
    out = build_cache(samples, args.file, processor, args.out, samples_per_shard=args.samples_per_shard,
                      jobs=args.jobs, progress=not args.no_progress)
    print(f"cache ready in {out}")
    return 0


VERBS = {
    "check": ("validate a data file record by record and report every problem", _add_check_arguments, _run_check),
    "prepare": ("write a preprocessing cache (resized frames, pooled masks) for fast training",
                _add_prepare_arguments, _run_prepare),
}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_verb", metavar="VERB")
    for verb, (help_text, add_arguments, _) in VERBS.items():
        add_arguments(sub.add_parser(verb, help=help_text, description=help_text))
    parser.set_defaults(_data_parser=parser)


def run_data(args: argparse.Namespace) -> int:
    if args.data_verb is None:
        args._data_parser.print_help()
        return 2
    return VERBS[args.data_verb][2](args)
