"""Questions about one frame share its encoding in a training batch (`data.frame_group`): the plan puts them
next to each other, the processor stacks the frame once with `frame_index`, and the model gives the same
loss and gradients as with a copy of the frame per row."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_sample
from smolrgpt.errors import ConfigError
from smolrgpt.modeling.model import InputMismatchError
from smolrgpt.training.config import load_config
from smolrgpt.training.data import BatchPlan, frame_numbers


@pytest.fixture()
def prepared(tiny_processor):
    """Five questions: three about frame A, then one about B, then one about an in-memory frame (no key)."""
    samples = [make_sample("a0"), make_sample("a1", question="Is the pallet <mask> left?",
                                                answer="[Region 0] is left.", boxes=[[10, 10, 60, 50]]),
               make_sample("a2"), make_sample("b0", seed=1), make_sample("c0", seed=2)]
    keys = ["A", "A", "A", "B", None]
    return [dataclasses.replace(tiny_processor.prepare(s), frame=k) for s, k in zip(samples, keys)]


def test_collate_stacks_each_frame_once_for_neighbouring_rows(tiny_processor, prepared):
    batch = tiny_processor.collate(prepared, "right", share_frames=True)
    assert batch["frame_index"].tolist() == [0, 0, 0, 1, 2]
    assert batch["pixel_values"].shape[0] == batch["depth_values"].shape[0] == 3
    np.testing.assert_array_equal(batch["pixel_values"][1].numpy(), prepared[3].pixel_values)
    assert batch["region_sample_index"].tolist() == [0, 0, 1, 2, 2, 3, 3, 4, 4]  # regions stay per row
    plain = tiny_processor.collate(prepared, "right")
    assert "frame_index" not in plain and plain["pixel_values"].shape[0] == 5
    # a frame shared by rows that are not neighbours, and rows without keys, get frames of their own
    apart = tiny_processor.collate([prepared[0], prepared[3], prepared[1]], "right", share_frames=True)
    assert "frame_index" not in apart and apart["pixel_values"].shape[0] == 3
    unkeyed = [dataclasses.replace(p, frame=None) for p in prepared[:2]]
    assert "frame_index" not in tiny_processor.collate(unkeyed, "right", share_frames=True)


def test_shared_frames_give_the_same_loss_and_gradients(tiny_model, tiny_processor, prepared):
    """Encoding a frame once for its three questions is the same computation as three copies."""
    from smolrgpt.training.recipe import summed_token_loss

    tiny_model.train()
    results = []
    for share in (False, True):
        tiny_model.zero_grad()
        batch = tiny_processor.collate(prepared, "right", share_frames=share)
        loss = summed_token_loss(tiny_model, batch, torch.device("cpu"), None)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a)
    assert grads_a.keys() == grads_b.keys() and any(k.startswith("rgb_refiner") for k in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_bad_frame_index_is_refused(tiny_model, tiny_processor, prepared):
    batch = {k: v for k, v in tiny_processor.collate(prepared, "right", share_frames=True).items() if k != "labels"}
    with pytest.raises(InputMismatchError, match="points outside the 3 frames"):
        tiny_model(**{**batch, "frame_index": torch.tensor([0, 0, 0, 1, 3])})
    with pytest.raises(InputMismatchError, match="ordered by frame"):
        tiny_model(**{**batch, "frame_index": torch.tensor([0, 1, 0, 1, 2])})
    with pytest.raises(InputMismatchError, match=r"shape \(4,\), the batch has 5 rows"):
        tiny_model(**{**batch, "frame_index": torch.tensor([0, 0, 1, 2])})


def test_plan_keeps_up_to_frame_group_questions_of_a_frame_together():
    rng = np.random.default_rng(0)
    frames = np.repeat(np.arange(30), 10)[rng.permutation(300)]  # 30 frames x 10 questions, shuffled
    lengths = rng.integers(80, 200, 300)
    distinct = lambda steps: np.mean([len(set(frames[s].tolist())) for s in steps])  # noqa: E731
    for group_by_length in (False, True):
        plan = BatchPlan(16, 1, 1, group_by_length=group_by_length, mega_batch_steps=4, frame_group=4)
        steps = plan.steps(lengths, 0, frames=frames)
        assert sorted(np.concatenate(steps).tolist()) == list(range(300))  # every sample once
        for step in steps:  # 10 questions -> units of 4, 4, 2 per frame; units of one frame may meet
            runs = np.split(frames[step], np.flatnonzero(np.diff(frames[step])) + 1)
            assert max(len(run) for run in runs) <= 10
            assert len(runs) == len(set(frames[step].tolist()))  # a frame's questions in a step are neighbours
        assert distinct(steps) <= 6.0, distinct(steps)
    single = BatchPlan(16, 1, 1, frame_group=1)
    assert [s.tolist() for s in single.steps(lengths, 0, frames=frames)] == \
        [s.tolist() for s in single.steps(lengths, 0)]  # frame_group 1: the ungrouped plan
    assert distinct(single.steps(lengths, 0)) >= 10.0


def test_frame_numbers_and_config_check(tmp_path):
    from training_helpers import write_track3_set

    from smolrgpt.training.data import load_samples

    root = write_track3_set(tmp_path / "d", {"train": 3})
    samples = load_samples(str(root / "train.json"))
    numbers = frame_numbers(samples)
    keys = [s.frame_key() for s in samples]
    assert len(set(numbers.tolist())) == len(set(keys)) >= 2
    assert all((numbers[i] == numbers[j]) == (keys[i] == keys[j]) for i in range(len(keys)) for j in range(len(keys)))
    memory = frame_numbers([make_sample("x"), make_sample("y")])  # in-memory frames: one number each
    assert memory.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="data.frame_group must be positive"):
        load_config(None, ["data.train=x.json", "data.frame_group=0"])
