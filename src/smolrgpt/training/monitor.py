"""What a run reports, on the main process only: metrics.jsonl (one JSON per optimizer step and per
evaluation), TensorBoard event files, optional Weights & Biases, a progress bar, and a loss / learning-rate
plot at the end."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from smolrgpt.errors import ConfigError

METRICS = "metrics.jsonl"
PLOT = "training_curves.png"


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill: everything after it is unreliable
    return records


def trim_metrics(path: Path, last_step: int) -> None:
    """On resume: keep what happened up to the checkpoint; the steps after it will be logged again."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


class Monitor:
    def __init__(self, out_dir: Path, logging_cfg, config_dict: dict, enabled: bool, total_steps: int,
                 start_step: int, resumed: bool):
        self.enabled = enabled
        self.out_dir = out_dir
        self.cfg = logging_cfg
        self.tb = self.wandb = self.bar = None
        if not enabled:
            return
        wandb = None
        if logging_cfg.wandb:  # imported only when asked for; checked before anything is written
            try:
                import wandb
            except ImportError:
                raise ConfigError("logging.wandb=true but wandb is not installed: `pip install wandb` "
                                  "(or set logging.wandb=false)") from None
        metrics = out_dir / METRICS
        if resumed:
            trim_metrics(metrics, start_step)
        elif metrics.exists():
            metrics.unlink()
        self.file = open(metrics, "a", buffering=1)
        if logging_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is a dependency; this only happens in a broken install
                raise ConfigError(f"logging.tensorboard=true but TensorBoard cannot be imported ({exc}); "
                                  "`pip install tensorboard` or set logging.tensorboard=false") from None
            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1 if resumed else None)
        if wandb is not None:
            self.wandb = wandb.init(project=logging_cfg.wandb_project, name=logging_cfg.wandb_run_name,
                                    config=config_dict, dir=str(out_dir), resume="allow")
        if logging_cfg.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            desc=f"stage {config_dict['train']['stage']}")
        self._t0 = time.perf_counter()

    def _write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def train_step(self, record: dict) -> None:
        if not self.enabled:
            return
        self._write(record)
        step = record["step"]
        if self.tb is not None:
            self.tb.add_scalar("train/loss", record["loss"], step)
            self.tb.add_scalar("train/grad_norm", record["grad_norm"], step)
            self.tb.add_scalar("train/samples_per_s", record["samples_per_s"], step)
            for name, lr in record["lr"].items():
                self.tb.add_scalar(f"lr/{name}", lr, step)
        if self.wandb is not None:
            self.wandb.log({"train/loss": record["loss"], "train/grad_norm": record["grad_norm"],
                            **{f"lr/{k}": v for k, v in record["lr"].items()}}, step=step)
        if self.bar is not None:
            lr = max(record["lr"].values())
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}",
                                 sps=f"{record['samples_per_s']:.1f}", refresh=False)
            self.bar.update(1)

    def evaluation(self, record: dict) -> None:
        if not self.enabled:
            return
        self._write(record)
        step = record["step"]
        flat = {"eval/val_loss": record["val_loss"]}
        for cat, acc in (record.get("accuracy") or {}).items():
            flat[f"eval/accuracy_{cat}"] = acc
        if self.tb is not None:
            for k, v in flat.items():
                if v is not None:
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(flat, step=step)
        if self.bar is not None:
            self.bar.write(f"step {step}: val_loss {record['val_loss']:.4f}"
                           + "".join(f", {k} {v:.3f}" for k, v in (record.get("accuracy") or {}).items()))

    def close(self, plot: bool) -> Path | None:
        if not self.enabled:
            return None
        if self.bar is not None:
            self.bar.close()
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        return plot_curves(self.out_dir / METRICS, self.out_dir / PLOT) if plot else None


def plot_curves(metrics_path: Path, out_path: Path) -> Path | None:
    """Training loss (and validation loss) against step, and each learning rate against step."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("type") == "train"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [r for r in records if r.get("type") == "eval" and r.get("val_loss") is not None]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="validation")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss (per answer token)")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    for name in train[0]["lr"]:
        ax_lr.plot([r["step"] for r in train], [r["lr"].get(name) for r in train], label=name)
    ax_lr.set_xlabel("optimizer step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend()
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
