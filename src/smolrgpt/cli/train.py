"""`smolrgpt train` (one stage) and `smolrgpt curriculum` (the three stages in turn)."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from smolrgpt.errors import ConfigError
from smolrgpt.training.allocator import tune_allocator

_STAGE_PREFIX = re.compile(r"^stage(\d+)\.(.+)$")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "smolrgpt train [--resume] [--print-config] CONFIG [KEY=VALUE ...]"
    p.add_argument("config", help="stage config (YAML), e.g. configs/stage3.yaml or src/smolrgpt/demo/stage3.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings to override, e.g. data.train=/data/train.json train.batch_size=56")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in train.output_dir from its `last` checkpoint, exactly")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run_train(args) -> int:
    from smolrgpt.training.config import load_config

    tune_allocator()
    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    from smolrgpt.training.trainer import train

    summary = train(config, resume=args.resume)
    if _is_main_process():
        print(json.dumps(summary))
    return 0


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def add_curriculum_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "smolrgpt curriculum --out DIR [--init-from best|last] CONFIG [CONFIG ...] [KEY=VALUE ...]"
    p.add_argument("items", nargs="+", metavar="CONFIG_OR_KEY=VALUE",
                   help="the stage configs in order (e.g. configs/stage1.yaml configs/stage2.yaml "
                        "configs/stage3.yaml), then overrides: KEY=VALUE for every stage, "
                        "stageN.KEY=VALUE for the N-th config only")
    p.add_argument("--out", required=True, help="run folder: stage N writes to OUT/stageN")
    p.add_argument("--init-from", choices=("best", "last"), default="best",
                   help="which checkpoint of a stage starts the next (best falls back to last)")


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    configs = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    if not configs:
        raise ConfigError("curriculum: give at least one stage config (YAML file)")
    return configs, overrides


def stage_overrides(overrides: list[str], index: int, count: int) -> list[str]:
    out = []
    for item in overrides:
        m = _STAGE_PREFIX.match(item)
        if m is None:
            out.append(item)
            continue
        n = int(m.group(1))
        if not 1 <= n <= count:
            raise ConfigError(f"{item}: there are {count} stage configs (stage1 .. stage{count})")
        if n == index:
            out.append(m.group(2))
    return out


def next_init(stage_dir: Path, prefer: str) -> Path:
    from smolrgpt.training.state import verify_checkpoint

    for name in ((prefer, "last") if prefer == "best" else ("last",)):
        if (stage_dir / name).is_dir():
            verify_checkpoint(stage_dir / name)
            return stage_dir / name
    raise ConfigError(f"{stage_dir} finished without a checkpoint to start the next stage from")


def run_curriculum(args) -> int:
    from smolrgpt.training import distributed as D
    from smolrgpt.training.config import load_config
    from smolrgpt.training.state import find_resumable
    from smolrgpt.training.trainer import DONE, train

    configs, overrides = split_items(args.items)
    tune_allocator()
    out = Path(args.out)
    previous: Path | None = None
    summaries, finished = [], False
    try:
        for index, path in enumerate(configs, start=1):
            stage_dir = out / f"stage{index}"
            extra = [f"train.output_dir={stage_dir}"]
            if previous is not None:
                extra.append(f"model.init={previous}")
            config = load_config(path, [*stage_overrides(overrides, index, len(configs)), *extra])
            if (stage_dir / DONE).is_file():
                if _is_main_process():
                    print(f"curriculum: {stage_dir} is finished; skipping", flush=True)
                summaries.append(json.loads((stage_dir / DONE).read_text()))
            else:
                resume = find_resumable(stage_dir) is not None
                if resume and _is_main_process():
                    print(f"curriculum: resuming {stage_dir}", flush=True)
                summaries.append(train(config, resume=resume, keep_process_group=True))
            previous = next_init(stage_dir, args.init_from)
        finished = True
    finally:
        D.shutdown(together=finished)
    if _is_main_process():
        print(json.dumps({"stages": summaries, "final_checkpoint": str(previous)}))
    return 0
