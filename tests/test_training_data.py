"""Batching: length grouping, exact coverage, world-size invariance; disjoint train/validation data."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import make_sample
from smolrgpt.errors import ConfigError, SampleError
from smolrgpt.training.data import (BatchPlan, check_disjoint, eval_batches, load_samples, padding_tokens,
                                    split_by_frame, token_lengths)
from training_helpers import write_track3_set


def _lengths(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(80, 512, n)


def test_length_grouping_pads_less_than_random_batches_and_covers_every_sample_once():
    lengths = _lengths(1000)
    grouped = BatchPlan(40, 4, 1, group_by_length=True, mega_batch_steps=8)
    plain = BatchPlan(40, 4, 1, group_by_length=False)
    for epoch in range(2):
        pads = {}
        for name, plan in (("grouped", grouped), ("random", plain)):
            steps = plan.steps(lengths, epoch)
            assert len(steps) == plan.steps_per_epoch(len(lengths)) == 25
            flat = np.concatenate(steps)
            assert sorted(flat.tolist()) == list(range(len(lengths)))  # every sample exactly once
            micro = [mb for s in steps for mb in plan.micro_batches(s)]
            assert all(len(mb) == 10 for mb in micro)
            pads[name] = padding_tokens(lengths, micro)
        assert pads["grouped"] < 0.25 * pads["random"], pads


def test_epochs_differ_and_plans_are_reproducible():
    lengths = _lengths(200)
    plan = BatchPlan(20, 2, 1)
    a, b = plan.steps(lengths, 0), plan.steps(lengths, 1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))  # the epoch reseeds the order
    assert all(np.array_equal(x, y) for x, y in zip(a, plan.steps(lengths, 0)))


def test_plan_does_not_depend_on_the_number_of_processes():
    """The effective batches are the same for 1, 2 or 4 processes; each rank takes a disjoint share."""
    lengths = _lengths(195)  # 195 = 8 full steps of 24 + a partial step of 3
    single = BatchPlan(24, 2, 1)
    for world in (2, 4):
        plan = BatchPlan(24, 2, world)
        steps = plan.steps(lengths, 3)
        ref = single.steps(lengths, 3)
        assert [s.tolist() for s in steps] == [s.tolist() for s in ref if len(s) >= world]
        for step in steps:
            shares = [np.concatenate(plan.rank_micro_batches(step, r)) for r in range(world)]
            assert sorted(np.concatenate(shares).tolist()) == sorted(step.tolist())
            counts = {len(plan.rank_micro_batches(step, r)) for r in range(world)}
            assert len(counts) == 1  # every process runs the same number of micro-steps
    assert len(BatchPlan(24, 2, 2).steps(lengths, 0)) == 9  # partial step of 3 kept for 2 processes
    assert len(BatchPlan(24, 2, 4).steps(lengths, 0)) == 8  # ... but not for 4 (3 < 4 samples)
    with pytest.raises(ConfigError, match="multiple of train.grad_accum x processes"):
        BatchPlan(20, 4, 3)


def test_eval_batches_shard_without_overlap():
    shards = [eval_batches(11, 3, r, 3) for r in range(3)]
    flat = [i for shard in shards for batch in shard for i in batch]
    assert sorted(flat) == list(range(11))


def test_train_and_validation_must_be_disjoint(tmp_path):
    a, b = make_sample("a", seed=1), make_sample("b", seed=2)
    check_disjoint([a], [b])
    with pytest.raises(ConfigError, match="sample id"):
        check_disjoint([a], [make_sample("a", seed=3)])
    with pytest.raises(ConfigError, match="frame"):
        check_disjoint([a], [make_sample("c", seed=1)])  # same image, other question
    root = write_track3_set(tmp_path, {"train": 4, "val": 1})
    train = load_samples(str(root / "train.json"))
    with pytest.raises(ConfigError, match="frame"):  # e.g. validating on a copy of the training file
        copy = [s for s in load_samples(str(root / "train.json"))]
        for s in copy:
            s.id = "v" + s.id
        check_disjoint(train, copy)


def test_split_by_frame_holds_out_whole_frames(tmp_path):
    root = write_track3_set(tmp_path, {"train": 10}, questions_per_frame=3)
    samples = load_samples(str(root / "train.json"))
    train, val = split_by_frame(samples, 0.2, seed=0)
    assert len(val) == 6 and len(train) == 24
    check_disjoint(train, val)


def test_token_lengths_refuse_or_skip_bad_samples(tiny_processor):
    good = make_sample("ok")
    bad = make_sample("bad", question="How far is the pallet <mask>?", boxes=[[0, 0, 5, 5], [5, 5, 9, 9]])
    with pytest.raises(SampleError, match="'bad'"):
        token_lengths([good, bad], tiny_processor)
    kept, lengths, dropped = token_lengths([good, bad], tiny_processor, skip_invalid=True)
    assert [s.id for s in kept] == ["ok"] and dropped == 1
    assert lengths[0] == len(tiny_processor.prepare(good).input_ids)


def test_training_reads_a_preprocessing_cache(tmp_path, tiny_processor):
    """`data.train_cache` gives the model what the processor would (masks stored in float16)."""
    cache_mod = pytest.importorskip("smolrgpt.processing.cache")
    from smolrgpt.training.data import PreparedDataset, open_cache

    root = write_track3_set(tmp_path / "d", {"train": 3})
    samples = load_samples(str(root / "train.json"))
    cache_mod.build_cache(samples, root / "train.json", tiny_processor, tmp_path / "cache", progress=False)
    cache = open_cache(str(tmp_path / "cache"), tiny_processor, str(root / "train.json"), samples)
    cached, direct = PreparedDataset(samples, tiny_processor, cache=cache), PreparedDataset(samples, tiny_processor)
    for i in range(len(samples)):
        a, b = cached[i], direct[i]
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.pixel_values, b.pixel_values, atol=1e-6)
        np.testing.assert_allclose(a.region_masks, b.region_masks, atol=1e-3)
    other = make_sample("not-in-cache")
    with pytest.raises(ConfigError, match="lacks 1 sample"):
        open_cache(str(tmp_path / "cache"), tiny_processor, str(root / "train.json"), [other])
    with pytest.raises(ConfigError, match="data cache"):
        open_cache(str(tmp_path / "nothing"), tiny_processor, None, samples)


def test_category_repeats_fix_the_epoch_length_and_redraw_the_fractions():
    from smolrgpt.training.config import CategoryRepeats
    from smolrgpt.training.data import epoch_size, sample_repeats

    categories = ["left_right"] * 10 + ["distance"] * 20 + ["count"] * 6 + [None] * 4
    samples = [make_sample(f"s{i}") for i in range(len(categories))]
    for sample, category in zip(samples, categories):
        sample.category = category
    assert sample_repeats(samples, CategoryRepeats()) is None  # all 1: the plain plan
    repeats = sample_repeats(samples, CategoryRepeats(left_right=2.0, distance=0.25, count=1.5))
    assert repeats.tolist() == [2.0] * 10 + [0.25] * 20 + [1.5] * 6 + [1.0] * 4
    assert epoch_size(repeats) == 20 + 5 + 9 + 4
    plan = BatchPlan(4, 1, 1)
    lengths = _lengths(len(samples))
    epochs = [np.concatenate(plan.steps(lengths, e, repeats)) for e in range(3)]
    for flat in epochs:
        used = np.bincount(flat, minlength=len(samples))
        assert len(flat) == 38 and (used[:10] == 2).all() and (used[36:] == 1).all()
        assert used[10:30].sum() == 5 and used[10:30].max() == 1  # a quarter of distance, none twice
        assert used[30:36].sum() == 9 and set(used[30:36]) == {1, 2}
    assert len({tuple(np.sort(f[(f >= 10) & (f < 30)])) for f in epochs}) > 1  # redrawn each epoch
    assert all(np.array_equal(a, b) for a, b in zip(plan.steps(lengths, 1, repeats), plan.steps(lengths, 1, repeats)))
    assert all(np.array_equal(a, b) for a, b in zip(plan.steps(lengths, 1), BatchPlan(4, 1, 1).steps(lengths, 1)))
    with pytest.raises(ConfigError, match="sets mcq, but no training sample has that category"):
        sample_repeats(samples, CategoryRepeats(mcq=3.0))
    with pytest.raises(ConfigError, match="leaves no training sample"):
        sample_repeats(samples[:10], CategoryRepeats(left_right=0.0))


def test_normalized_answer_targets_replace_only_the_answer():
    from smolrgpt.evaluation.normalize import normalize_answer
    from smolrgpt.training.data import with_normalized_answers

    sample = make_sample("q1")
    sample.category, sample.normalized_answer, sample.source = "distance", 3.25, "train.json#record 4"
    (target,) = with_normalized_answers([sample])
    assert target.turns == [(sample.question, "3.25")] and target.regions == sample.regions
    assert sample.answer.startswith("The pallet [Region 0]")  # the original is untouched
    assert normalize_answer(target.answer, target.question, "distance") == "3.25"
    sample.normalized_answer = None
    with pytest.raises(SampleError, match=r"sample 'q1' in train\.json#record 4: data\.answer_target=normalized needs"):
        with_normalized_answers([sample])
    # a side word answers about the question's subject: here the second region, so "left" is flipped
    side = dataclasses.replace(sample, category="left_right", normalized_answer="left",
                               turns=[("On which side of the pallet <mask> does the pallet <mask> appear?", "")])
    (target,) = with_normalized_answers([side])
    assert target.answer == "right"
    assert normalize_answer(target.answer, target.question, "left_right") == "left"
    side.normalized_answer = "above"
    with pytest.raises(SampleError, match=r"sample 'q1' in train\.json#record 4: .*no short answer reads back as "
                                          r"the normalized answer 'above' \(left_right\)"):
        with_normalized_answers([side])


def test_reasoned_targets_show_the_count_work_and_keep_short_answers_elsewhere():
    from smolrgpt.training.data import with_normalized_answers

    question = "Given the buffer regions <mask> <mask> and the pallets <mask> <mask>, how many pallets are in the left buffer?"
    count = make_sample("c1")
    count = dataclasses.replace(count, category="count", normalized_answer=1, source="train.json#record 7", turns=[(
        question, "The buffer region [Region 1] is the leftmost. The pallet [Region 3] is in the buffer region "
                  "[Region 1]. So there is one pallet in it.")])
    distance = make_sample("d1")
    distance.category, distance.normalized_answer = "distance", 3.25
    reasoned = with_normalized_answers([count, distance], reasoned=True)
    assert [s.answer for s in reasoned] == ["[Region 1]: [Region 3], 1 pallet", "3.25"]
    assert [s.answer for s in with_normalized_answers([count, distance])] == ["1", "3.25"]
    wrong = dataclasses.replace(count, normalized_answer=2)
    with pytest.raises(SampleError, match=r"sample 'c1' in train\.json#record 7: data\.answer_target=reasoned: the "
                                          r"count answer must name a buffer and list exactly 2 pallet\(s\), got 'The"):
        with_normalized_answers([wrong], reasoned=True)
