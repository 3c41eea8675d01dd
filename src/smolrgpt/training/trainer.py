"""The training loop of one curriculum stage: one process or many (torchrun), exact resume, validation
loss and (stage 3) Track 3 accuracy, checkpoints `last` and `best`.

Outputs in `train.output_dir`: config.yaml (the resolved config), metrics.jsonl, tensorboard/,
training_curves.png, last/ and best/ (checkpoint folders, see state.py), DONE when the stage finished.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from smolrgpt.errors import CheckpointError, ConfigError
from smolrgpt.modeling.stages import TOP_LEVEL_MODULES, present_modules
from smolrgpt.training import distributed as D
from smolrgpt.training import recipe, state as S
from smolrgpt.training.config import TrainingConfig, config_from_dict, differences, read_yaml
from smolrgpt.training.data import (BatchPlan, PreparedDataset, check_disjoint, epoch_loader, eval_batches,
                                    epoch_size, frame_numbers, load_samples, open_cache, sample_repeats,
                                    split_by_frame, token_lengths, with_normalized_answers)
from smolrgpt.training.monitor import Monitor

DONE = "DONE"
# The lead-in's epochs are shuffled with seeds of their own (the plan seeds each epoch by its number).
LEAD_IN_EPOCHS = 1_000_000
# Settings that may change between a run and its resume without changing what is computed.
RESUME_MAY_CHANGE = ("logging.", "checkpoint.", "train.output_dir", "train.num_threads", "data.num_workers",
                     "train.eval_every", "train.eval_batch_size", "train.accuracy_samples", "train.max_new_tokens",
                     "model.init", "model.vision", "model.language", "model.tokenizer", "train.distributed",
                     "train.find_unused_parameters", "train.device", "data.train_cache", "data.val_cache")


def build_initial_model(model_cfg, max_length: int):
    """(model, processor) from `model.init`: a preset (random or backbone-initialised) or a checkpoint."""
    init = model_cfg.init
    if init.startswith("preset:"):
        from smolrgpt.modeling.config import PRESETS
        from smolrgpt.modeling.weights import build_from_backbones, resolve_language_source, tokenizer_for_preset

        preset = init.split(":", 1)[1]
        if preset not in PRESETS:
            raise ConfigError(f"model.init: unknown preset {preset!r} (choose one of {', '.join(PRESETS)})")
        language = resolve_language_source(model_cfg.language)
        tokenizer = model_cfg.tokenizer
        if tokenizer is None and language is None:
            tokenizer = tokenizer_for_preset(preset)
        return build_from_backbones(vision=model_cfg.vision, language=language, tokenizer=tokenizer,
                                    preset=preset, max_length=max_length)
    if model_cfg.vision or model_cfg.language:
        raise ConfigError("model.vision / model.language apply to a preset init (model.init=preset:NAME), "
                          f"not to the checkpoint {init}")
    from smolrgpt.modeling.checkpoint import load_checkpoint

    return load_checkpoint(init)  # verified against its manifest first


class Trainer:
    def __init__(self, config: TrainingConfig, resume: bool = False):
        self.cfg = config
        self.resume = resume or config.checkpoint.resume
        self.out = Path(config.train.output_dir)
        self.device = recipe.resolve_device(config.train.device, D.world_from_env().local_rank)
        self.world = D.init_distributed(self.device)
        self.amp = recipe.resolve_precision(config.train.precision, self.device)
        if config.train.num_threads:
            torch.set_num_threads(config.train.num_threads)
        torch.manual_seed(config.train.seed)
        np.random.seed(config.train.seed)
        self.plan = BatchPlan(config.train.batch_size, config.train.grad_accum, self.world.size,
                              config.data.group_by_length, config.data.mega_batch_steps, config.train.seed,
                              config.data.frame_group)

    # -- setup ---------------------------------------------------------------------------------------
    def _resume_source(self) -> Path | None:
        from smolrgpt.atomic import claim_output

        ours = (self.out / "config.yaml").is_file()
        claim_output(self.out, "train", overwrite=False, saved={} if ours else None, settings={},
                     flag="train.output_dir", can_overwrite=False)
        last = S.find_resumable(self.out)
        if not self.resume:
            if last is not None or (self.out / DONE).exists():
                raise ConfigError(f"{self.out} already holds a run: pass --resume to continue it, or choose "
                                  "another train.output_dir")
            return None
        if last is None:
            raise CheckpointError(f"--resume: no checkpoint to resume from in {self.out} (expected {self.out / 'last'})")
        saved = self.out / "config.yaml"
        if saved.is_file():
            changed = differences(config_from_dict(read_yaml(saved)), self.cfg, ignore=RESUME_MAY_CHANGE)
            if changed:
                raise ConfigError(f"--resume with a different recipe: {', '.join(changed)} changed since "
                                  f"{saved}; resume with the same settings or start a new output_dir")
        return last

    def _load_data(self):
        d = self.cfg.data
        train = load_samples(d.train, d.format, d.images_root, d.depths_root, d.max_train_samples)
        val = []
        if d.val:
            val = load_samples(d.val, d.format, d.val_images_root, d.val_depths_root, d.max_val_samples)
        elif d.val_fraction > 0:
            train, val = split_by_frame(train, d.val_fraction, self.cfg.train.seed)
            val = val[: d.max_val_samples] if d.max_val_samples else val
        if val:
            check_disjoint(train, val)
        if d.answer_target != "conversation":
            reasoned = d.answer_target == "reasoned"
            train, val = with_normalized_answers(train, reasoned), with_normalized_answers(val, reasoned)
        return train, val

    def setup(self) -> None:
        cfg = self.cfg
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one progress bar (ours), not one per checkpoint shard
        self.source = self._resume_source()
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            S.remove_stale_staging(self.out)
            (self.out / "config.yaml").write_text(cfg.to_yaml())
        D.barrier()
        if self.source is not None:
            self.state = S.read_state(self.source)
            from smolrgpt.modeling.checkpoint import load_checkpoint

            model, processor = load_checkpoint(self.source)
        else:
            self.state = None
            model, processor = build_initial_model(cfg.model, cfg.data.max_length)
        processor.max_length = cfg.data.max_length
        self.processor = processor
        self.train_samples, self.val_samples = self._load_data()
        skip = cfg.data.skip_invalid
        self.train_samples, self.lengths, dropped = token_lengths(self.train_samples, processor, skip)
        self.repeats = sample_repeats(self.train_samples, cfg.data.category_repeats)
        self.sample_frames = frame_numbers(self.train_samples) if cfg.data.frame_group > 1 else None
        if self.val_samples:
            self.val_samples, _, dropped_val = token_lengths(self.val_samples, processor, skip)
            dropped += dropped_val
        if dropped and self.world.is_main:
            print(f"data.skip_invalid: dropped {dropped} sample(s) that cannot be trained on", flush=True)
        d = cfg.data
        self.train_cache = open_cache(d.train_cache, processor, d.train, self.train_samples)
        # A validation split carved out of the training file is in the training cache.
        val_cache = d.val_cache if d.val else d.train_cache
        self.val_cache = open_cache(val_cache, processor, d.val or d.train, self.val_samples) \
            if self.val_samples else None
        self.trainable = recipe.freeze_for_stage(model, cfg.train.stage, cfg.optim.lr)
        if cfg.model.gradient_checkpointing:
            recipe.enable_activation_checkpointing(model)
        model.to(self.device)
        unused = cfg.train.find_unused_parameters
        if unused is None:
            unused = cfg.train.stage >= 2 and any(not s.regions for s in self.train_samples)
        self.model = D.wrap_model(model, self.world, self.device, cfg.train.distributed, unused)
        self.core = D.unwrap(self.model)
        self.optimizer = recipe.build_optimizer(self.core, cfg.train.stage, cfg.optim)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.epoch_samples = len(self.train_samples) if self.repeats is None else epoch_size(self.repeats)
        spe = self.plan.steps_per_epoch(self.epoch_samples)
        if spe == 0:
            raise ConfigError(f"{self.epoch_samples} training samples per epoch do not fill one step of "
                              f"{self.world.size} processes")
        total = math.ceil(cfg.schedule.epochs * spe)
        self.total_steps = min(total, cfg.schedule.max_steps) if cfg.schedule.max_steps else total
        self.steps_per_epoch = spe
        self.lead_in_steps = cfg.data.lead_in.steps(self.total_steps)
        self.lead_in_repeats, self.lead_in_steps_per_epoch = None, 0
        if self.lead_in_steps:
            self.lead_in_repeats = sample_repeats(self.train_samples, cfg.data.lead_in.repeats, default=0.0,
                                                  name="data.lead_in.repeats")
            lead_in_samples = epoch_size(self.lead_in_repeats)
            self.lead_in_steps_per_epoch = self.plan.steps_per_epoch(lead_in_samples)
            if self.lead_in_steps_per_epoch == 0:
                raise ConfigError(f"data.lead_in.repeats: {lead_in_samples} samples per epoch "
                                  f"do not fill one step of {self.world.size} processes")
        self.scheduler = recipe.build_scheduler(self.optimizer, self.total_steps, cfg.schedule.warmup_ratio,
                                                cfg.schedule.min_lr_ratio)
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.best_val, self.samples_seen = math.inf, 0
        if self.state is not None:
            self._restore(self.state)
        self.monitor = Monitor(self.out, cfg.logging, cfg.to_dict(), self.world.is_main, self.total_steps,
                               self.step, resumed=self.state is not None)

    def _restore(self, st: dict) -> None:
        if st["total_steps"] != self.total_steps:
            raise CheckpointError(f"the checkpoint was made for {st['total_steps']} steps, this run has "
                                  f"{self.total_steps}: the data or the batch settings changed")
        if st.get("lead_in_steps", 0) != self.lead_in_steps:
            raise CheckpointError(f"the checkpoint was made with {st.get('lead_in_steps', 0)} lead-in steps, "
                                  f"this run has {self.lead_in_steps}: data.lead_in changed")
        D.load_optimizer_state(self.model, self.optimizer, st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.step, self.epoch, self.step_in_epoch = st["step"], st["epoch"], st["step_in_epoch"]
        self.best_val, self.samples_seen = st["best_val"], st["samples_seen"]
        rngs = st["rng"]
        S.set_rng_state(rngs[self.world.rank] if len(rngs) == self.world.size else rngs[0], self.device)

    def _set_modes(self, training: bool) -> None:
        self.model.train(training)
        if training:  # frozen modules stay in eval mode (no dropout / statistics updates in them)
            for name in present_modules(self.core, TOP_LEVEL_MODULES):
                if name not in self.trainable:
                    getattr(self.core, name).eval()

    # -- one optimizer step ----------------------------------------------------------------------------
    def _train_step(self, micro: list[dict]) -> tuple[float, float, int, int, dict]:
        local_tokens = sum(recipe.answer_token_count(b["labels"]) for b in micro)
        local_samples = sum(len(b["input_ids"]) for b in micro)
        tokens, samples = D.all_reduce_sum([local_tokens, local_samples], self.device)
        scale = self.world.size / max(tokens, 1.0)
        loss_sum = 0.0
        for i, batch in enumerate(micro):
            with D.no_sync(self.model, skip=i < len(micro) - 1):
                summed = recipe.summed_token_loss(self.model, batch, self.device, self.amp)
                (summed * scale).backward()
            loss_sum += float(summed.detach())
        max_norm = self.cfg.optim.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm if max_norm > 0 else float("inf"))
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        lrs = recipe.current_lrs(self.optimizer)  # the rates this update uses (before the scheduler moves)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        (loss_total,) = D.all_reduce_sum([loss_sum], self.device)
        return loss_total / max(tokens, 1.0), float(norm), int(samples), int(tokens), lrs

    # -- evaluation ------------------------------------------------------------------------------------
    def _forward_model(self):
        # DDP's forward may broadcast buffers (a collective): evaluate the plain module. FSDP must run
        # through its wrapper (it gathers the shards), in lockstep on every process.
        return self.model if D.is_fsdp(self.model) else self.core

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        if not self.val_samples:
            return None
        self._set_modes(False)
        dataset = PreparedDataset(self.val_samples, self.processor, train=True, cache=self.val_cache)
        batches = eval_batches(len(dataset), self.cfg.train.eval_batch_size, self.world.rank, self.world.size)
        rounds = D.all_reduce_max(len(batches), self.device)
        loss = tokens = 0.0
        model = self._forward_model()
        for i in range(rounds):
            real = i < len(batches)
            idx = batches[i] if real else [0]  # keeps FSDP's collectives in lockstep; not counted
            batch = self.processor.collate([dataset[j] for j in idx], "right")
            summed = recipe.summed_token_loss(model, batch, self.device, self.amp)
            if real:
                loss += float(summed)
                tokens += recipe.answer_token_count(batch["labels"])
        loss, tokens = D.all_reduce_sum([loss, tokens], self.device)
        self._set_modes(True)
        return loss / max(tokens, 1.0)

    @torch.no_grad()
    def track3_accuracy(self) -> dict | None:
        n = self.cfg.train.accuracy_samples
        pool = [s for s in self.val_samples if s.category and s.normalized_answer is not None]
        if not n or not pool:
            return None
        from smolrgpt.training.evaluate import accuracy_by_category, generate_answers

        rng = np.random.default_rng(self.cfg.train.seed)
        chosen = [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]
        shard = np.array_split(np.arange(len(chosen)), self.world.size)[self.world.rank]
        bs = self.cfg.train.eval_batch_size
        rounds = D.all_reduce_max(math.ceil(len(shard) / bs), self.device) if D.is_fsdp(self.model) else None
        self._set_modes(False)
        answers = generate_answers(self._forward_model(), self.processor, [chosen[i] for i in shard], bs,
                                   self.cfg.train.max_new_tokens, self.device, self.amp, rounds, chosen[0])
        self._set_modes(True)
        results = D.gather_objects([(chosen[i].category, chosen[i].question, chosen[i].normalized_answer, a)
                                    for i, a in zip(shard, answers)])
        return accuracy_by_category(results)

    def evaluate(self) -> dict:
        t0 = time.perf_counter()
        record = {"type": "eval", "step": self.step, "epoch": self.epoch, "val_loss": self.validation_loss()}
        if self.cfg.train.stage == 3:
            record["accuracy"] = self.track3_accuracy()
        record["eval_seconds"] = round(time.perf_counter() - t0, 3)
        self.monitor.evaluation(record)
        return record

    # -- checkpoints -----------------------------------------------------------------------------------
    def _counters(self) -> dict:
        return {"version": S.STATE_VERSION, "step": self.step, "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "total_steps": self.total_steps,
                "lead_in_steps": self.lead_in_steps,
                "steps_per_epoch": self.steps_per_epoch, "best_val": self.best_val,
                "samples_seen": self.samples_seen, "world_size": self.world.size, "stage": self.cfg.train.stage}

    def save(self, name: str, with_state: bool) -> None:
        full = D.full_model_state(self.model)  # collective under FSDP: every process calls it
        trainer_state = None
        if with_state:
            optim = D.optimizer_state(self.model, self.optimizer)
            rngs = D.gather_objects([S.rng_state(self.device)])
            trainer_state = {**self._counters(), "optimizer": optim, "scheduler": self.scheduler.state_dict(),
                             "rng": rngs}
        if self.world.is_main:
            info = {k: v for k, v in self._counters().items() if k != "version"}
            info["best_val"] = None if math.isinf(self.best_val) else self.best_val
            S.write_checkpoint(self.out / name, self.core, self.processor, trainer_state, info, model_state=full)
        D.barrier()

    # -- the loop --------------------------------------------------------------------------------------
    def training_batches(self, steps: list[np.ndarray], num_workers: int):
        """(this rank's micro-batches, micro-batches per step) of the given optimizer steps."""
        dataset = PreparedDataset(self.train_samples, self.processor, train=True, cache=self.train_cache)
        share = self.sample_frames is not None  # data.frame_group > 1
        collate = lambda items: self.processor.collate(items, "right", share_frames=share)  # noqa: E731
        return epoch_loader(dataset, self.plan, steps, self.world.rank, collate, num_workers)

    def fit(self) -> dict:
        self.setup()
        cfg, world = self.cfg, self.world
        if world.is_main:
            print(f"stage {cfg.train.stage}: {len(self.train_samples)} training / {len(self.val_samples)} "
                  f"validation samples, {self.total_steps} steps ({self.steps_per_epoch} per epoch), "
                  f"effective batch {cfg.train.batch_size} = {self.plan.micro_batch} x {cfg.train.grad_accum} "
                  f"accumulation x {world.size} process(es), device {self.device}, "
                  f"{'bf16 autocast' if self.amp else 'fp32'}; trainable {self.trainable}", flush=True)
            if self.repeats is not None:
                print(f"data.category_repeats {dataclasses.asdict(cfg.data.category_repeats)}: "
                      f"{self.epoch_samples} samples per epoch", flush=True)
            if self.lead_in_steps:
                print(f"data.lead_in: the first {self.lead_in_steps} steps draw from "
                      f"{dataclasses.asdict(cfg.data.lead_in.repeats)} "
                      f"({self.lead_in_steps_per_epoch} steps per epoch)", flush=True)
        self._set_modes(True)
        last_eval = None
        t_start = time.perf_counter()
        while self.step < self.total_steps:
            # The data position is (epoch, step in epoch) of the current phase: the lead-in's epochs, then
            # the main mix's from epoch 0 (the phase follows from the step, so resuming needs nothing more).
            if self.step < self.lead_in_steps:
                repeats, per_epoch, end = self.lead_in_repeats, self.lead_in_steps_per_epoch, self.lead_in_steps
                seed_epoch = LEAD_IN_EPOCHS + self.epoch
            else:
                repeats, per_epoch, end = self.repeats, self.steps_per_epoch, self.total_steps
                seed_epoch = self.epoch
            steps = self.plan.steps(self.lengths, seed_epoch, repeats, self.sample_frames)[self.step_in_epoch:]
            steps = steps[: end - self.step]
            batches, per_step = self.training_batches(steps, cfg.data.num_workers)
            for count in per_step:
                t0 = time.perf_counter()
                micro = [next(batches) for _ in range(count)]
                loss, norm, samples, tokens, lrs = self._train_step(micro)
                self.step += 1
                self.step_in_epoch += 1
                if self.step == self.lead_in_steps:
                    self.epoch, self.step_in_epoch = 0, 0
                self.samples_seen += samples
                dt = time.perf_counter() - t0
                self.monitor.train_step({
                    "type": "train", "step": self.step, "epoch": self.epoch, "loss": loss, "grad_norm": norm,
                    "lr": lrs, "samples": samples, "tokens": tokens,
                    "samples_per_s": samples / max(dt, 1e-9), "seconds": round(dt, 4),
                    "elapsed": round(time.perf_counter() - t_start, 3)})
                final = self.step == self.total_steps
                if (cfg.train.eval_every and self.step % cfg.train.eval_every == 0) or final:
                    last_eval = self.evaluate()
                    val = last_eval["val_loss"]
                    if cfg.checkpoint.save_best and val is not None and val < self.best_val:
                        self.best_val = val
                        self.save("best", with_state=False)
                if (cfg.checkpoint.save_every and self.step % cfg.checkpoint.save_every == 0) or final:
                    self.save("last", with_state=True)
            if self.step_in_epoch >= per_epoch:
                self.epoch += 1
                self.step_in_epoch = 0
        plot = self.monitor.close(cfg.logging.plot)
        summary = {"stage": cfg.train.stage, "steps": self.step, "output_dir": str(self.out),
                   "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
                   "last_eval": last_eval, "plot": str(plot) if plot else None,
                   "seconds": round(time.perf_counter() - t_start, 2)}
        if world.is_main:
            (self.out / DONE).write_text(json.dumps(summary, indent=1))
        D.barrier()
        return summary


def seconds_per_step(config: TrainingConfig, steps: int = 12, warmup: int = 2,
                     max_seconds: float | None = None) -> float:
    """Mean wall time of one optimizer step of this config: its own data, model and batch plan (steps
    spread evenly over its first epoch, since length grouping makes neighbouring batches alike; fewer
    once `max_seconds` have passed, two at least). Trains a throwaway copy in `train.output_dir`, which
    should be a scratch folder; no checkpoint is written. Used to size a stage to a time budget."""
    trainer = Trainer(config)
    trainer.setup()
    epoch = trainer.plan.steps(trainer.lengths, 0, trainer.repeats, trainer.sample_frames)
    chosen = _spread(epoch, warmup + steps)
    if trainer.lead_in_steps:  # the lead-in's questions differ in length: it gets its share of the timed steps
        share = trainer.lead_in_steps / trainer.total_steps
        lead_in = iter(_spread(trainer.plan.steps(trainer.lengths, LEAD_IN_EPOCHS, trainer.lead_in_repeats,
                                                   trainer.sample_frames), steps))
        main, timed = iter(chosen[warmup:]), []
        for i in range(steps):
            step = next(lead_in, None) if int((i + 1) * share) > int(i * share) else None
            step = next(main, None) if step is None else step
            if step is None:
                break
            timed.append(step)
        chosen = chosen[:warmup] + timed
    batches, per_step = trainer.training_batches(chosen, 0)
    trainer._set_modes(True)
    times = []
    start = time.perf_counter()
    for count in per_step:
        t0 = time.perf_counter()
        trainer._train_step([next(batches) for _ in range(count)])
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and len(times) >= warmup + 2 and t0 - start > max_seconds:
            break
    trainer.monitor.close(False)
    return float(np.mean(times[warmup:] or times))


def _spread(epoch: list, count: int) -> list:
    """`count` steps spread evenly over an epoch (length grouping makes neighbouring steps alike)."""
    return epoch[::max(1, len(epoch) // count)][:count]


def train(config: TrainingConfig, resume: bool = False, keep_process_group: bool = False) -> dict:
    """Run one stage. `keep_process_group` lets the curriculum run several stages in one torchrun job."""
    trainer, finished = Trainer(config, resume), False
    try:
        summary = trainer.fit()
        finished = True
        return summary
    finally:
        if not keep_process_group:
            D.shutdown(together=finished)
