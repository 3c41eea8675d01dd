"""Prefill groups of the shared-prefix decoder: rows of similar suffix length share one padded prefill."""
from smolrgpt.decoding import length_groups


def test_length_groups_split_where_padding_would_exceed_the_slack():
    # 100 and 90 share (100 <= 1.25 * 90); 70 starts a group (100 > 1.25 * 70), which 60 joins (70 <= 75)
    assert length_groups([60, 100, 70, 90]) == [[1, 3], [2, 0]]
    assert length_groups([5, 5, 5]) == [[0, 1, 2]]  # equal lengths always share
    assert length_groups([40]) == [[0]]
    assert length_groups([10, 30, 20], slack=1.0) == [[1], [2], [0]]
    assert length_groups([10, 30, 20], slack=3.0) == [[1, 2, 0]]


def test_every_row_lands_in_exactly_one_group():
    lengths = [7, 31, 12, 12, 55, 8, 30, 9]
    groups = length_groups(lengths)
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    for group in groups:  # longest first, within the slack
        assert lengths[group[0]] == max(lengths[r] for r in group)
        assert all(lengths[group[0]] <= 1.25 * lengths[r] for r in group)


def test_a_batch_prefilled_in_groups_answers_as_each_row_alone(tiny_model, tiny_processor, monkeypatch):
    import smolrgpt.decoding as decoding
    from smolrgpt.engine import SmolRGPT

    from conftest import liven, make_frame

    engine = SmolRGPT(liven(tiny_model), tiny_processor, batch_size=4, max_new_tokens=8)
    frame = engine.frame(*make_frame(0))
    questions = [("Describe the scene.", []),
                 ("Which is leftmost: <mask> <mask> <mask>?", [[0, 0, 9, 9], [50, 5, 90, 60], [100, 50, 159, 89]]),
                 ("How far is the pallet <mask> from the pallet <mask>?", [[0, 0, 40, 30], [80, 40, 150, 85]]),
                 ("Describe it.", [])]
    alone = [engine.ask(frame, q, boxes, normalize=False).text for q, boxes in questions]
    seen = []
    monkeypatch.setattr(decoding, "length_groups", lambda lengths: seen.append(length_groups(lengths)) or seen[-1])
    together = engine.ask_batch([engine.question(frame, q, boxes) for q, boxes in questions], normalize=False)
    assert len(seen) == 1 and len(seen[0]) > 1  # the batch really was prefilled in several groups
    assert [a.text for a in together] == alone
    assert len(set(alone)) > 2  # different answers, so a row mix-up would show
