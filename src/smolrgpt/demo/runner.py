"""`smolrgpt demo`: the main job end to end on built-in data, inside a time budget, resumable.

Phases, each recorded in OUT/demo_state.json when finished (a rerun skips finished phases and resumes the
unfinished one where its own tool resumes: frames, cache shards, training checkpoints, answered questions):

  data      synthetic train / val / test splits (each split draws its frames from its own random stream)
  captions  stage-1 captions of the training frames, from their scene files
  caches    preprocessing caches of the training and validation files
  plan      seconds per optimizer step of each stage, measured where the demo runs, turned into step counts
            that fit the budget (kept, so a resumed run trains exactly the same schedule)
  stage1-3  the curriculum (stage N starts from stage N-1's best checkpoint)
  model     the final checkpoint, copied to OUT/model (what `ask`, `predict` and `serve` take)
  evaluate  predictions on the validation split, scored next to constant and random answers, report
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from smolrgpt.atomic import write_json_atomic, write_text_atomic
from smolrgpt.demo.config import DemoConfig, stage_configs
from smolrgpt.errors import ConfigError

STATE = "demo_state.json"
EVALUATIONS = {1: 4, 2: 4, 3: 8}  # validation passes per stage (stage 3's include answering questions)
STAGE_DATA = {1: ("captions.json", "captions_val.json", "llava"), 2: ("train.json", "val.json", "track3"),
              3: ("train.json", "val.json", "track3")}


class DemoState:
    """Finished phases with their wall time, and the budget plan; written atomically after each phase."""

    def __init__(self, out: Path, config: DemoConfig):
        self.path = out / STATE
        identity = config.to_dict()
        if self.path.is_file():
            self.data = json.loads(self.path.read_text())
            if self.data.get("config") != identity:
                raise ConfigError(f"{out} holds a demo run made with other settings; resume it with the same "
                                  "settings, or choose another --out")
        else:
            self.data = {"config": identity, "phases": {}, "plan": None}
            self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data, indent=1)

    def done(self, phase: str) -> bool:
        return phase in self.data["phases"]

    def finish(self, phase: str, seconds: float, **info) -> None:
        self.data["phases"][phase] = {"seconds": round(seconds, 2), **info}
        self.save()

    def spent(self) -> float:
        return sum(p["seconds"] for p in self.data["phases"].values())


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


class Demo:
    def __init__(self, config: DemoConfig, out: str | Path, progress: bool = True):
        self.config = config
        from smolrgpt.atomic import claim_output

        self.out = Path(out)
        claim_output(self.out, "demo", overwrite=False, saved={} if (self.out / STATE).is_file() else None,
                     settings={}, can_overwrite=False)
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.state = DemoState(self.out, config)
        write_text_atomic(self.out / "demo_config.yaml", config.to_yaml())
        self.data_dir = self.out / "data"
        self.cache_dir = self.out / "cache"
        self.runs = self.out / "runs"

    # -- phases --------------------------------------------------------------------------------------
    def run(self) -> dict:
        phases = [("data", self.make_data), ("captions", self.make_captions), ("caches", self.make_caches),
                  ("plan", self.make_plan), ("stage1", lambda: self.train_stage(1)),
                  ("stage2", lambda: self.train_stage(2)), ("stage3", lambda: self.train_stage(3)),
                  ("model", self.export_model), ("evaluate", self.evaluate)]
        for name, phase in phases:
            if self.state.done(name):
                say(f"{name}: done earlier ({self.state.data['phases'][name]['seconds']:.0f} s); skipping")
                continue
            say(f"{name} ...")
            t0 = time.perf_counter()
            info = phase() or {}
            self.state.finish(name, time.perf_counter() - t0, **info)
        from smolrgpt.demo.report import print_summary

        return print_summary(self.out, self.state.data)

    def make_data(self) -> dict:
        from smolrgpt.synth.dataset import SynthConfig, generate_dataset, parse_size

        d = self.config.data
        width, height = parse_size(d.size)
        frames = (("train", self.config.train_frames()), ("val", d.val_frames), ("test", d.test_frames))
        synth = SynthConfig(out=str(self.data_dir), seed=d.seed, width=width, height=height,
                            questions_per_frame=d.questions_per_frame, frames=frames)
        summary = generate_dataset(synth, workers=d.workers, progress=self.progress)
        return {"splits": summary["splits"]}

    def make_captions(self) -> dict:
        from smolrgpt.synth.captions import write_captions

        written = write_captions(self.data_dir, ("train", "val"), seed=self.config.data.seed)
        return {"files": {k: str(v) for k, v in written.items()}}

    def make_caches(self) -> dict:
        from smolrgpt.data import open_dataset
        from smolrgpt.modeling.weights import preset_settings
        from smolrgpt.processing.cache import build_cache

        if not self.config.model.init.startswith("preset:"):
            raise ConfigError("model.init: the demo starts from a preset (preset:NAME)")
        settings = preset_settings(self.config.model.init.split(":", 1)[1])
        for name, fmt in (("train.json", "track3"), ("val.json", "track3"), ("captions.json", "llava"),
                          ("captions_val.json", "llava")):
            source = self.data_dir / name
            build_cache(open_dataset(source, fmt), source, settings, self.cache_dir / source.stem,
                        progress=self.progress)
        return {}

    # -- training ------------------------------------------------------------------------------------
    def stage_config(self, stage: int, output_dir: Path, max_steps: int | None = None, extra: list[str] = (),
                     from_start: bool = False):
        """Stage `stage`'s training config in this run; `from_start` starts it from the initial model
        (not the previous stage's checkpoint), for timing steps before anything is trained."""
        from smolrgpt.training.config import load_config

        train_file, val_file, fmt = STAGE_DATA[stage]
        overrides = [f"data.train={self.data_dir / train_file}", f"data.val={self.data_dir / val_file}",
                     f"data.format={fmt}", f"data.train_cache={self.cache_dir / Path(train_file).stem}",
                     f"data.val_cache={self.cache_dir / Path(val_file).stem}", f"train.output_dir={output_dir}",
                     f"logging.progress={self.progress}"]
        if stage == 1 or from_start:
            overrides.append(f"model.init={self.config.model.init}")
            if self.config.model.language:
                overrides.append(f"model.language={self.config.model.language}")
        else:
            overrides.append(f"model.init={self.runs / f'stage{stage - 1}' / 'best'}")
        if max_steps is not None:  # the budget decides the length: as many epochs as the steps need
            every = max(1, max_steps // EVALUATIONS[stage])
            overrides += [f"schedule.max_steps={max_steps}", "schedule.epochs=100000", f"train.eval_every={every}",
                          f"checkpoint.save_every={every}"]
        return load_config(stage_configs(self.config)[stage - 1], [*overrides, *extra])

    def make_plan(self) -> dict:
        """Seconds per step of each stage, measured here on the stage's own data and model size, and the
        seconds one validation answer takes; the budget left after data and evaluation is shared out."""
        from smolrgpt.training.trainer import seconds_per_step

        b = self.config.budget
        measured = {}
        with tempfile.TemporaryDirectory(prefix="smolrgpt-demo-plan-") as scratch:
            for stage in (1, 2, 3):
                config = self.stage_config(stage, Path(scratch) / f"stage{stage}", from_start=True,
                                           extra=["logging.progress=false", "logging.tensorboard=false",
                                                  "logging.plot=false"])
                # at most ~2% of the budget per stage on timing (a larger model takes seconds per step)
                measured[stage] = seconds_per_step(config, max_seconds=b.minutes * 60 * 0.02)
                say(f"plan: stage {stage} takes {measured[stage]:.3f} s per step on this machine")
            per_question, questions = self.seconds_per_answer()
        stage3 = self.stage_config(3, Path("unused"))
        val_batches = -(-(stage3.data.max_val_samples or 300) // stage3.train.batch_size)
        # in-training validation per stage: a validation loss (forward only, about a third of a training
        # step per batch) and, in stage 3, answers to `accuracy_samples` questions
        overhead = {str(st): EVALUATIONS[st] * val_batches * measured[st] / 3 for st in (1, 2, 3)}
        overhead["3"] += EVALUATIONS[3] * per_question * min(stage3.train.accuracy_samples, questions)
        plan = {"seconds_per_step": {str(k): round(v, 4) for k, v in measured.items()},
                "eval_overhead_seconds": {k: round(v, 1) for k, v in overhead.items()},
                "final_eval_seconds": round(per_question * questions, 1), "steps": {}}
        self.state.data["plan"] = plan
        train_seconds = self.training_seconds_left()
        for stage in (1, 2, 3):
            self.size_stage(stage, train_seconds * self.shares()[stage])
        say(f"plan: {train_seconds:.0f} s of training -> steps per stage {plan['steps']} "
            "(stage 3 is sized again from the time left when it starts)")
        return {"plan": plan}

    def shares(self) -> dict[int, float]:
        b = self.config.budget
        return {1: b.stage1_share, 2: b.stage2_share, 3: 1.0 - b.stage1_share - b.stage2_share}

    def training_seconds_left(self) -> float:
        """The budget minus the time spent so far, the final evaluation and the planned evaluations
        of the stages not trained yet."""
        plan = self.state.data["plan"]
        pending = sum(v for k, v in plan["eval_overhead_seconds"].items() if f"stage{k}" not in self.state.data["phases"])
        return self.config.budget.minutes * 60.0 - self.state.spent() - plan["final_eval_seconds"] - pending

    def size_stage(self, stage: int, seconds: float) -> int:
        plan, b = self.state.data["plan"], self.config.budget
        steps = max(b.min_steps, int(seconds / plan["seconds_per_step"][str(stage)])) if seconds > 0 else b.min_steps
        if seconds <= 0:
            say(f"plan: the {b.minutes:g}-minute budget is used up; stage {stage} trains {b.min_steps} steps")
        plan["steps"][str(stage)] = steps
        self.state.save()
        return steps

    def seconds_per_answer(self) -> tuple[float, int]:
        """(seconds per validation answer, validation questions): one batch answered by the untrained
        model, which never stops early, so the estimate errs long. When stage 3 trains short answers,
        the batch is answered to the longest such answer's length (plus its end token), not to
        `eval.max_new_tokens`: with 64 tokens the estimate was 20x the trained model's real time, and
        on a busy machine it ate the whole training budget."""
        from smolrgpt.data import open_dataset
        from smolrgpt.training.config import ModelSection
        from smolrgpt.training.data import with_normalized_answers
        from smolrgpt.training.evaluate import generate_answers
        from smolrgpt.training.trainer import build_initial_model
        import torch

        samples = list(open_dataset(self.data_dir / "val.json", "track3"))
        e = self.config.eval
        model, processor = build_initial_model(ModelSection(init=self.config.model.init,
                                                            language=self.config.model.language), 512)
        model.eval()
        tokens = e.max_new_tokens
        if self.stage_config(3, Path("unused")).data.answer_target == "normalized":
            answers = [s.turns[0][1] for s in with_normalized_answers(samples)]
            longest = max(len(processor.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
            tokens = min(tokens, longest + 1)
        batch = samples[: e.batch_size]
        t0 = time.perf_counter()
        with torch.no_grad():
            generate_answers(model, processor, batch, e.batch_size, tokens, torch.device("cpu"))
        return (time.perf_counter() - t0) / max(len(batch), 1), len(samples)

    def train_stage(self, stage: int) -> dict:
        from smolrgpt.training.state import find_resumable
        from smolrgpt.training.trainer import DONE, train

        out = self.runs / f"stage{stage}"
        plan = self.state.data["plan"]
        if stage == 3 and not plan.get("stage3_resized"):
            # stages 1-2 and the step-time measurement (a few steps) are off by 10-20% either way: give
            # stage 3 exactly the time that is left (once: a resumed run keeps the same schedule)
            t0 = time.perf_counter()
            if self.training_seconds_left() > 0:
                self.time_stage3_again()
            left = self.training_seconds_left() - (time.perf_counter() - t0)
            steps = self.size_stage(3, left)
            plan["stage3_resized"] = True
            self.state.save()
            say(f"stage 3: {max(left, 0):.0f} s left for training -> {steps} steps")
        config = self.stage_config(stage, out, plan["steps"][str(stage)])
        if (out / DONE).is_file():
            return json.loads((out / DONE).read_text())
        resume = find_resumable(out) is not None
        if resume:
            say(f"stage {stage}: resuming {out}")
        summary = train(config, resume=resume)
        return {"summary": summary}

    def time_stage3_again(self) -> float:
        """Stage 3's seconds per step, measured again on its own starting checkpoint: a shared
        machine's speed drifts over minutes (a 60-minute run planned 0.211 s per step and trained at 0.29 s, and
        overran by 24%), and stage 3 is most of the budget. Costs at most ~1% of the budget."""
        from smolrgpt.training.trainer import seconds_per_step

        plan = self.state.data["plan"]
        with tempfile.TemporaryDirectory(prefix="smolrgpt-demo-plan-") as scratch:
            config = self.stage_config(3, Path(scratch) / "stage3", extra=["logging.progress=false",
                                       "logging.tensorboard=false", "logging.plot=false"])
            measured = seconds_per_step(config, max_seconds=self.config.budget.minutes * 60 * 0.01)
        plan.setdefault("stage3_seconds_per_step_planned", plan["seconds_per_step"]["3"])
        plan["seconds_per_step"]["3"] = round(measured, 4)
        say(f"stage 3: timed again at its start: {measured:.3f} s per step "
            f"(the plan measured {plan['stage3_seconds_per_step_planned']:.3f})")
        return measured

    def export_model(self) -> dict:
        from smolrgpt.atomic import staged_folder

        source = self.runs / "stage3" / "best"
        if not source.is_dir():
            source = self.runs / "stage3" / "last"
        target = self.out / "model"
        with staged_folder(target) as tmp:
            for item in source.iterdir():
                if item.is_file():
                    shutil.copy2(item, tmp / item.name)
        return {"source": str(source), "model": str(target)}

    def evaluate(self) -> dict:
        from smolrgpt.demo.report import evaluate_demo

        return evaluate_demo(self)
