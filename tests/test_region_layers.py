"""The learned region layers. Contents: which masks count as lying on which, and that it sums (so it can
count). Comparisons: its pair features, that it sees only the other masks of the same question and sums (so
it can count the masks to a region's left). Both: that each starts as the model without it, where it trains,
and that training and the inference engine add the same."""
import pytest
import torch

from smolrgpt.data.sample import Region
from smolrgpt.engine import Question, SmolRGPT
from smolrgpt.modeling.config import SmolRGPTConfig
from smolrgpt.modeling.extensions.comparisons import RegionComparisons, pair_features
from smolrgpt.modeling.extensions.contents import RegionContents
from smolrgpt.modeling.extensions.geometry import mask_places, overlap_shares
from smolrgpt.modeling.model import FrameFeatures, SmolRGPTForConditionalGeneration
from smolrgpt.training import recipe
from smolrgpt.training.config import LearningRates

from conftest import liven, make_frame, make_sample

GRID = 16


def _box(top, left, bottom, right, grid=GRID):
    mask = torch.zeros(grid, grid)
    mask[top:bottom, left:right] = 1.0
    return mask


# model attribute -> extension name
LAYERS = {"region_contents": "contents", "region_comparisons": "comparisons"}


def _lively(layer):
    """Large random weights in all of a region layer's Linears (the output ones start at zero)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for linear in layer.modules():
            if isinstance(linear, torch.nn.Linear):
                linear.weight.normal_(0, 0.5)
                if linear.bias is not None:
                    linear.bias.normal_(0, 0.5)
    return layer


def test_edges_mark_the_masks_lying_on_each_mask_within_its_row():
    buffer, inside, beside, far = _box(2, 2, 10, 10), _box(4, 4, 6, 6), _box(4, 11, 6, 13), _box(12, 12, 15, 15)
    masks = torch.stack([buffer, inside, beside, far, inside])
    index = torch.tensor([0, 0, 0, 0, 1])  # the last mask is the same pallet in another question
    shares = overlap_shares(masks, index)
    # (i, j): the share of mask i on or within one cell of mask j. The pallet two columns right of the
    # buffer's last column is beyond that cell; a quarter of the buffer lies on or beside the inside pallet.
    assert shares[1, 0] == 1.0 and shares[2, 0] == 0.0 and shares[3, 0] == 0.0
    assert shares[0, 1] == pytest.approx(16 / 64)
    edges = RegionContents(8, 8).edges(masks, index).detach()  # (i, j): how much j counts as lying on i
    sigmoid = lambda share: torch.sigmoid(torch.tensor(10 * (share - 0.5))).item()  # noqa: E731
    assert edges[0, 1] == pytest.approx(sigmoid(1.0)) and edges[0, 2] == pytest.approx(sigmoid(0.0))
    assert edges[1, 0] == pytest.approx(sigmoid(0.25))
    assert not edges.diagonal().any() and not edges[4, :4].any() and not edges[:4, 4].any()


def test_the_sum_makes_the_update_depend_on_how_many_members_there_are():
    contents = _lively(RegionContents(8, 16)).eval()
    buffer, pallet_a, pallet_b, outside = _box(0, 0, 12, 12), _box(1, 1, 4, 4), _box(6, 6, 9, 9), _box(13, 13, 16, 16)
    vectors = torch.ones(4, 8)  # identical members: a mean (or max) would not tell one from two

    def update(masks):
        index = torch.zeros(len(masks), dtype=torch.long)
        with torch.no_grad():
            return contents.update(vectors[:len(masks)], vectors[:len(masks)], torch.stack(masks), index)[0]

    one, two = update([buffer, pallet_a, outside]), update([buffer, pallet_a, pallet_b])
    assert not torch.allclose(one, two, atol=1e-3)
    # a mask that does not lie on the buffer changes nothing (only its soft edge's 0.7% weight)
    alone = update([buffer, pallet_a])
    assert torch.allclose(one, alone, atol=0.05 * (one - two).abs().max().item())


@pytest.mark.parametrize("option", LAYERS)
def test_a_model_with_the_option_starts_as_the_model_without_it(tmp_path, option):
    torch.manual_seed(0)
    plain = SmolRGPTForConditionalGeneration(SmolRGPTConfig.from_preset("smolrgpt-tiny", **{option: False})).eval()
    plain.save_pretrained(tmp_path)
    config = SmolRGPTConfig.from_pretrained(tmp_path)
    config.region_extensions = config.region_extensions + [LAYERS[option]]
    # loading initialises only the new layer's weights, its output Linear at zero
    with_layer = SmolRGPTForConditionalGeneration.from_pretrained(tmp_path, config=config).eval()
    layer = getattr(with_layer, option)
    assert layer is not None and not layer.output.weight.any() and layer.output.bias is not None
    grid, hidden, tokens = config.mask_grid, config.text_config.hidden_size, config.num_image_tokens
    frames = FrameFeatures(torch.randn(1, tokens, hidden), torch.randn(1, tokens, hidden))
    masks = torch.stack([_box(0, 0, 40, 40, grid), _box(5, 5, 15, 15, grid)])
    index = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        expected = plain.get_region_features(masks, index, frames)
        got = with_layer.get_region_features(masks, index, frames)
        _lively(layer)
        changed = with_layer.get_region_features(masks, index, frames)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert not torch.allclose(changed[0], expected[0], atol=1e-3)
    # saved and loaded with its weights, it gives the same vectors
    with_layer.save_pretrained(tmp_path / "with_layer")
    again = SmolRGPTForConditionalGeneration.from_pretrained(tmp_path / "with_layer").eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(changed, again.get_region_features(masks, index, frames)))


@pytest.mark.parametrize("option", LAYERS)
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_it_trains_in_stage_3_at_the_language_models_rate(stage, option):
    torch.manual_seed(0)
    model = SmolRGPTForConditionalGeneration(SmolRGPTConfig.from_preset("smolrgpt-tiny", **{option: True}))
    layer = getattr(model, option)
    counts = recipe.freeze_for_stage(model, stage)
    assert (option in counts) == (stage == 3)
    assert any(p.requires_grad for p in layer.parameters()) == (stage == 3)
    if stage == 3:
        assert counts[option] == sum(p.numel() for p in layer.parameters())
        groups = recipe.parameter_groups(model, 3, LearningRates(connectors=1e-4, refiners=2e-4,
                                                                  language_model=3e-5), 0.01)
        rates = {g["name"]: g["lr"] for g in groups if g["name"].startswith(option)}
        assert rates == {f"{option}/decay": 3e-5, f"{option}/no_decay": 3e-5}


@pytest.mark.parametrize("option", LAYERS)
def test_the_engine_adds_what_training_adds(tiny_processor, option):
    torch.manual_seed(0)
    model = SmolRGPTForConditionalGeneration(SmolRGPTConfig.from_preset("smolrgpt-tiny", **{option: True}))
    engine = SmolRGPT(liven(model.eval()), tiny_processor, batch_size=2, max_new_tokens=8)
    _lively(getattr(model, option))
    rgb, depth = make_frame(0)
    frame = engine.frame(rgb, depth)
    question, boxes = "How many pallets are in the buffer <mask>: <mask> <mask>?", [[0, 0, 120, 80], [10, 10, 40, 40],
                                                                                    [130, 60, 159, 89]]
    sample = make_sample("0", seed=0, question=question, answer=None, boxes=boxes)
    batch = tiny_processor([sample], train=False)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        tokens = model.generate(**inputs, max_new_tokens=8, eos_token_id=tiny_processor.eos_token_id,
                                pad_token_id=tiny_processor.pad_token_id)
        frames = model.get_frame_features(inputs["pixel_values"], inputs["depth_values"])
        masks, index = inputs["region_masks"], inputs["region_sample_index"]
        with_layer, layer = model.get_region_features(masks, index, frames)[0], getattr(model, option)
        applied = model.region_extension_attributes
        model.region_extension_attributes = tuple(name for name in applied if name != option)
        without = model.get_region_features(masks, index, frames)[0]
        model.region_extension_attributes = applied
    answer = engine.ask_batch([Question(frame, question, [Region("box", b) for b in boxes])], normalize=False)[0]
    assert answer.text == tiny_processor.decode(tokens[0])
    assert (with_layer - without)[0].abs().max() > 0.1  # the buffer's vectors change: the layer is covered


def test_pair_features_are_the_offsets_of_the_other_masks_place():
    masks = torch.stack([_box(0, 0, 4, 8), _box(8, 12, 16, 16)])
    places, present = mask_places(masks)
    # centroid x, y, box left, right, top, bottom; each cell's centre at (k + 0.5) / 16
    assert places[0].tolist() == pytest.approx([4 / 16, 2 / 16, 0.5 / 16, 7.5 / 16, 0.5 / 16, 3.5 / 16])
    assert present.all()
    features = pair_features(places, torch.tensor([0]), torch.tensor([1]))[0]
    offset = places[1] - places[0]
    assert features[:6].tolist() == pytest.approx(offset.tolist())
    assert features[6:].tolist() == pytest.approx(torch.tanh(16 * offset).tolist())
    assert features[6] > 0.99  # mask 1 lies right of mask 0: the steep half is nearly a step


def _left_counter(strength: float) -> RegionComparisons:
    """Weights set by hand: unit 0 of each message is GELU(-strength * tanh(16 * (x_j - x_i))), about
    `strength` for a mask j left of i and about 0 for one to its right, and the update's channel 0 passes
    the sum on."""
    layer = RegionComparisons(4, 4)
    with torch.no_grad():
        for linear in (layer.sender, layer.relation, layer.receive, layer.output):
            linear.weight.zero_()
            linear.bias.zero_()
        layer.relation.weight[0, 6] = -strength  # feature 6: tanh of the centroid x offset
        layer.receive.weight[0, 0] = layer.output.weight[0, 0] = 1.0
    return layer


def test_the_sum_counts_the_other_masks_of_the_question_to_a_regions_left():
    layer = _left_counter(10.0)
    columns = [(9, 11), (1, 3), (13, 15), (5, 7)]  # four masks, left to right: 2nd, 4th, 1st, 3rd
    masks = [_box(4, a, 8, b) for a, b in columns]
    index = torch.zeros(4, dtype=torch.long)

    def counts(masks, index):
        with torch.no_grad():
            vectors = torch.randn(len(masks), 4)  # what the masks are plays no part with these weights
            return layer.update(vectors, vectors, torch.stack(masks), index)[:4, 0]

    got = counts(masks, index)
    assert got.tolist() == pytest.approx([20.0, 0.0, 30.0, 10.0], abs=0.3)
    # a mask of another question, or an empty mask, changes nothing
    others = counts(masks + [_box(4, 0, 8, 1)], torch.tensor([0, 0, 0, 0, 1]))
    empty = counts(masks + [torch.zeros(GRID, GRID)], torch.zeros(5, dtype=torch.long))
    assert torch.equal(others, got) and torch.equal(empty, got)
