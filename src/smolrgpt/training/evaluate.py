"""Track 3 accuracy during training: greedy answers to validation questions, normalised and scored with
the project's own normaliser and official per-record rule (imported only when used)."""
from __future__ import annotations

import torch

from smolrgpt.training import recipe


def generate_answers(model, processor, samples: list, batch_size: int, max_new_tokens: int,
                     device: torch.device, amp_dtype=None, lockstep_rounds: int | None = None,
                     filler=None) -> list[str]:
    """Greedy answers, batched on LEFT-padded prompts (`prepare(train=False)` ends with an open assistant
    turn). Under FSDP every process must run the same number of generate calls and decode until all are
    done (weights are gathered per forward): `lockstep_rounds` calls, padded with `filler` questions whose
    answers are dropped."""
    core = getattr(model, "module", model)
    answers: list[str] = []
    extra = {"synced_gpus": True} if lockstep_rounds is not None else {}
    starts = list(range(0, len(samples), batch_size))
    if lockstep_rounds is not None:
        starts += [None] * (lockstep_rounds - len(starts))
    for start in starts:
        chunk = [filler] if start is None else samples[start:start + batch_size]
        prepared = [processor.prepare(s, train=False) for s in chunk]
        batch = processor.collate(prepared, "left")
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        with recipe.autocast(device, amp_dtype):
            tokens = core.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   eos_token_id=processor.eos_token_id, pad_token_id=processor.pad_token_id,
                                   **extra)
        if start is not None:
            answers.extend(processor.batch_decode(tokens.cpu()))
    return answers


def accuracy_by_category(results: list[tuple]) -> dict[str, float]:
    """results: (category, question, normalized ground truth, free-form prediction) per question.

    Returns the accuracy of each category present and `overall`, their unweighted mean (the challenge's
    final score is the mean of the four category accuracies)."""
    from smolrgpt.evaluation.normalize import normalize_answer
    from smolrgpt.evaluation.score import is_correct

    per: dict[str, list[bool]] = {}
    for category, question, truth, answer in results:
        pred = normalize_answer(answer, question=question, category=category)
        per.setdefault(category, []).append(bool(is_correct(category, truth, pred)))
    out = {cat: sum(v) / len(v) for cat, v in sorted(per.items())}
    if out:
        out["overall"] = sum(out.values()) / len(out)
    return out
