"""The core model (the paper's architecture, no region extension; tests/test_geometry.py and
test_region_layers.py test the extensions on the tiny preset's model)."""
import pytest
import torch

from smolrgpt.modeling.config import SmolRGPTConfig
from smolrgpt.modeling.model import FrameFeatures, InputMismatchError, SmolRGPTForConditionalGeneration
from smolrgpt.modeling.region import LayerNorm2d, Refiner, mask_pool, pool_refined
from smolrgpt.modeling.stages import parameter_summary, set_trainable

from conftest import liven, make_sample


def _inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def test_paper_preset_parameter_counts():
    with torch.device("meta"):
        model = SmolRGPTForConditionalGeneration(SmolRGPTConfig.from_preset("smolrgpt-600m"))
    s = parameter_summary(model)
    assert s["total_params"] == 475_697_280  # spec: about 476M
    assert s["modules"]["vision_tower"] == 85_843_200  # ViT 85.8M
    assert s["modules"]["language_model"] == 361_824_000  # LLM 361.8M (vocab 49155)
    assert s["modules"]["rgb_connector"] == 3072 * 960  # 2.95M
    assert s["modules"]["rgb_refiner"] == 3 * (960 * 960 * 4 + 960) + 2 * 2 * 960  # 11.07M
    assert s["trainable_params_by_stage"] == {"1": 2_949_120, "2": 28_030_080, "3": 389_854_080}


def test_set_trainable_freezes_by_stage(paper_model):
    set_trainable(paper_model, 2)
    trainable = {n.split(".")[0] for n, p in paper_model.named_parameters() if p.requires_grad}
    assert trainable == {"rgb_connector", "depth_connector", "rgb_refiner", "depth_refiner"}
    set_trainable(paper_model, 3)
    assert not any(p.requires_grad for p in paper_model.vision_tower.parameters())
    assert all(p.requires_grad for p in paper_model.language_model.parameters())


def test_mask_pool_is_the_weighted_mean():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 4, 4)
    masks = torch.zeros(3, 4, 4)
    masks[0, 0, 0], masks[0, 1, 1] = 1.0, 0.5
    masks[1, 3, 3] = 0.25
    masks[2, 2, 0:2] = 1.0
    pooled = mask_pool(features, masks, torch.tensor([0, 0, 1]), eps=0.0)
    expected0 = (features[0, :, 0, 0] * 1.0 + features[0, :, 1, 1] * 0.5) / 1.5
    torch.testing.assert_close(pooled[0], expected0)
    torch.testing.assert_close(pooled[1], features[0, :, 3, 3])
    torch.testing.assert_close(pooled[2], features[1, :, 2, 0:2].mean(dim=1))


def test_region_vectors_land_on_their_tags(paper_model, tiny_processor):
    samples = [make_sample("a", question="Is <mask> left of <mask>?", answer="left"),
               make_sample("b", seed=1, question="Pallets <mask> <mask> <mask>?", answer="2",
                           boxes=[[0, 0, 10, 10], [20, 20, 60, 60], [100, 0, 160, 90]])]
    batch = tiny_processor(samples)
    frames = paper_model.get_frame_features(batch["pixel_values"], batch["depth_values"])
    rgb_vec, depth_vec = paper_model.get_region_features(batch["region_masks"], batch["region_sample_index"], frames)
    embeds = paper_model.prepare_embeddings(batch["input_ids"], frames=frames, region_masks=batch["region_masks"],
                                           region_sample_index=batch["region_sample_index"])
    cfg = paper_model.config
    k = 0
    for row in range(2):
        rgb_pos = (batch["input_ids"][row] == cfg.mask_rgb_token_id).nonzero().flatten()
        depth_pos = (batch["input_ids"][row] == cfg.mask_depth_token_id).nonzero().flatten()
        for a, b in zip(rgb_pos, depth_pos):
            torch.testing.assert_close(embeds[row, a], rgb_vec[k])
            torch.testing.assert_close(embeds[row, b], depth_vec[k])
            k += 1
        image_pos = (batch["input_ids"][row] == cfg.image_token_id).nonzero().flatten()
        torch.testing.assert_close(embeds[row, image_pos], frames.image_tokens[row])
    assert k == 5
    # the k-th region really is the k-th mask: pooling region 4 alone gives the same vector
    rgb_map = paper_model.rgb_refiner(frames.image_tokens)
    alone = mask_pool(rgb_map, batch["region_masks"][4:5], torch.tensor([1]), cfg.mask_pool_eps)
    torch.testing.assert_close(alone[0], rgb_vec[4])  # the paper splices the pooled vector as it is


def test_pool_refined_matches_the_full_map_values_and_gradients():
    """Refining only the tokens under the masks gives the full map's pooled vectors and gradients."""
    torch.manual_seed(0)
    refiner = Refiner(width=8, num_layers=2, eps=1e-6)
    for module in refiner.modules():  # non-trivial LayerNorm affine parameters
        if isinstance(module, LayerNorm2d):
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.bias)
    tokens = torch.randn(3, 16, 8)  # 3 frames, 4x4 tokens -> 16x16 maps (k = 4)
    masks = torch.zeros(4, 16, 16)
    masks[0, 0:3, 0:5] = 1.0  # frame 0: spans tokens (0,0), (0,1)
    masks[1, 10:16, 9:11] = 0.5  # frame 0
    masks[2, 4, 4] = 1.0  # frame 2: a single pixel; frame 1 has no regions
    sample_index = torch.tensor([0, 0, 2, 2])  # region 3 is empty: pooled to zero by both
    results = []
    for fn in (lambda t: mask_pool(refiner(t), masks, sample_index, 1e-6),
               lambda t: pool_refined(refiner, t, masks, sample_index, 1e-6)):
        refiner.zero_grad()
        leaf = tokens.clone().requires_grad_(True)
        pooled = fn(leaf)
        (pooled * torch.linspace(-1, 1, pooled.numel()).reshape(pooled.shape)).sum().backward()
        results.append((pooled.detach(), leaf.grad, [p.grad.clone() for p in refiner.parameters()]))
    (full, full_grad, full_params), (sparse, sparse_grad, sparse_params) = results
    torch.testing.assert_close(sparse, full)
    assert sparse[3].abs().max() == 0 and full[2].abs().max() > 0
    torch.testing.assert_close(sparse_grad, full_grad)
    assert sparse_grad[1].abs().max() == 0  # the frame without regions gets no gradient
    for a, b in zip(sparse_params, full_params):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="ordered by frame"):
        pool_refined(refiner, tokens, masks, torch.tensor([2, 0, 0, 2]), 1e-6)


def test_mismatched_counts_raise(paper_model, tiny_processor):
    batch = tiny_processor([make_sample("a"), make_sample("b", seed=1)])
    with pytest.raises(InputMismatchError, match="do not match regions per row"):
        paper_model(**{**batch, "region_sample_index": torch.tensor([0, 0, 0, 1])})
    with pytest.raises(InputMismatchError, match="image tokens"):
        ids = batch["input_ids"].clone()
        ids[0, ids[0] == paper_model.config.image_token_id] = 5
        paper_model(**{**batch, "input_ids": ids})
    with pytest.raises(InputMismatchError, match="ordered by row"):
        paper_model(**{**batch, "region_sample_index": torch.tensor([1, 1, 0, 0])})
    with pytest.raises(ValueError, match=r"region masks are \(32, 32\), refined feature maps \(64, 64\)"):
        paper_model(**{**batch, "region_masks": batch["region_masks"][:, ::2, ::2]})


def test_loss_is_on_answer_tokens_only(paper_model, tiny_processor):
    batch = tiny_processor([make_sample("a"), make_sample("b", seed=1, question="Is <mask> left?", answer="Yes.")])
    out = paper_model(**batch)
    logits = out.logits[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, manual)
    # changing a non-answer label position has no effect: only answers are learned
    assert keep.sum() == sum((batch["labels"][r] != -100).sum() for r in range(2))


def _greedy_without_cache(model, batch, steps, eos):
    embeds = model.prepare_embeddings(batch["input_ids"], batch["pixel_values"], batch.get("depth_values"),
                                      batch.get("region_masks"), batch.get("region_sample_index"))
    mask = batch["attention_mask"]
    out = []
    for _ in range(steps):
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                      use_cache=False).logits[:, -1]
        token = logits.argmax(-1)
        out.append(token)
        embeds = torch.cat([embeds, model.get_input_embeddings()(token)[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if eos is not None and bool((token == eos).all()):
            break
    return torch.stack(out, dim=1)


def test_kv_cache_greedy_equals_full_recomputation(paper_model, tiny_processor):
    batch = tiny_processor([make_sample("a", answer=None)], train=False)
    cached = paper_model.generate(**_inputs(batch), max_new_tokens=12)
    full = _greedy_without_cache(paper_model, batch, 12, None)
    assert cached.tolist() == full.tolist()


def test_batched_generation_equals_one_by_one(paper_model, tiny_processor):
    samples = [make_sample("a", answer=None),
               make_sample("b", seed=1, question="Which one of <mask> <mask> <mask> is leftmost?", answer=None,
                           boxes=[[0, 0, 10, 10], [20, 20, 60, 60], [100, 0, 160, 90]]),
               make_sample("c", seed=2, question="Describe <mask>.", answer=None)]
    batch = tiny_processor(samples, train=False)
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padded
    together = paper_model.generate(**_inputs(batch), max_new_tokens=10)
    for row, sample in enumerate(samples):
        alone = paper_model.generate(**_inputs(tiny_processor([sample], train=False)), max_new_tokens=10)
        assert together[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_generation_stops_each_row_at_the_end_token(paper_model, tiny_processor):
    samples = [make_sample("a", answer=None), make_sample("b", seed=3, answer=None)]
    batch = tiny_processor(samples, train=False)
    liven(paper_model)  # so that greedy decoding does not repeat one token
    free = paper_model.generate(**_inputs(batch), max_new_tokens=10)
    # pick as "end token" a token that row 0 emits at step 2 (and not before)
    eos = int(free[0, 2])
    assert eos not in free[0, :2].tolist(), free[0].tolist()
    pad = tiny_processor.pad_token_id
    stopped = paper_model.generate(**_inputs(batch), max_new_tokens=10, eos_token_id=eos, pad_token_id=pad)
    assert stopped[0, :3].tolist() == free[0, :3].tolist()
    assert all(t == pad for t in stopped[0, 3:].tolist())
    row1 = free[1].tolist()
    stop1 = row1.index(eos) + 1 if eos in row1 else len(row1)
    assert stopped[1, :stop1].tolist() == row1[:stop1]
    end = tiny_processor.eos_token_id
    tokens = free[0, :2].tolist()
    assert tiny_processor.decode(tokens + [end] + free[0, 2:].tolist()) == tiny_processor.decode(tokens)


def test_sampling_is_seeded_and_differs_from_greedy(paper_model, tiny_processor):
    batch = tiny_processor([make_sample("a", answer=None)], train=False)
    torch.manual_seed(5)
    a = paper_model.generate(**_inputs(batch), max_new_tokens=8, do_sample=True, temperature=5.0)
    torch.manual_seed(5)
    b = paper_model.generate(**_inputs(batch), max_new_tokens=8, do_sample=True, temperature=5.0)
    greedy = paper_model.generate(**_inputs(batch), max_new_tokens=8)
    assert a.tolist() == b.tolist() and a.tolist() != greedy.tolist()


def test_right_padded_batch_refused_for_generation(paper_model, tiny_processor):
    batch = tiny_processor([make_sample("a", answer=None), make_sample("b", question="Short <mask>?", answer=None,
                                                                       boxes=[[0, 0, 9, 9]])], padding_side="right", train=False)
    with pytest.raises(InputMismatchError, match="left padding"):
        paper_model.generate(**_inputs(batch), max_new_tokens=2)


def test_save_and_load_round_trip_exactly(paper_model, tiny_processor, tmp_path):
    from smolrgpt.modeling.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(paper_model, tiny_processor, tmp_path / "ckpt")
    model, processor = load_checkpoint(tmp_path / "ckpt")
    for (name, a), (_, b) in zip(paper_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert model.language_model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    batch = processor([make_sample("a")])
    torch.testing.assert_close(model(**batch).logits, paper_model(**batch).logits, rtol=0, atol=0)


def test_checkpoint_errors(tmp_path):
    from smolrgpt.errors import CheckpointError
    from smolrgpt.modeling.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text('{"model_type": "smolrgpt"}')
    with pytest.raises(CheckpointError, match="missing processor_config.json, tokenizer_config.json, model.safetensors"):
        load_checkpoint(tmp_path / "partial")


def test_a_random_encoder_starts_from_sincos_positions_and_saved_positions_survive_loading(tiny_config, tmp_path):
    from smolrgpt.modeling.model import sincos_position_table

    table = sincos_position_table(16, 8)  # a 4x4 grid, 2 channels per sin/cos half
    assert table.shape == (16, 8)
    grid = table.reshape(4, 4, 8)
    assert torch.equal(grid[0, :, :4], grid[3, :, :4])  # first half: the column only
    assert torch.equal(grid[:, 0, 4:], grid[:, 3, 4:])  # second half: the row only
    assert torch.allclose(grid[0, 0], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="square patch grid"):
        sincos_position_table(15, 8)

    torch.manual_seed(0)
    model = SmolRGPTForConditionalGeneration.from_scratch(tiny_config)
    embeddings = model.vision_tower.embeddings.position_embedding.weight
    assert torch.equal(embeddings, sincos_position_table(*embeddings.shape))
    # the table is an option of building from scratch, not of __init__: the same seed gives the same
    # weights everywhere else (the table takes no random numbers), and __init__ keeps SigLIP's init
    torch.manual_seed(0)
    plain = SmolRGPTForConditionalGeneration(tiny_config)
    name = "vision_tower.embeddings.position_embedding.weight"
    assert not torch.equal(plain.state_dict()[name], embeddings)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items() if k != name)
    torch.manual_seed(0)
    unset = SmolRGPTForConditionalGeneration.from_scratch(tiny_config, sincos_positions=False)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in unset.state_dict().items())
    with torch.no_grad():
        embeddings.add_(0.5)
    model.save_pretrained(tmp_path)
    loaded = SmolRGPTForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(loaded.vision_tower.embeddings.position_embedding.weight, embeddings)


@torch.no_grad()
def test_public_api_frame_features_and_its_pooling_strategies_agree(tiny_model, tiny_processor):
    sample = make_sample("b", seed=1, question="Pallets <mask> <mask> <mask>?", answer="2",
                         boxes=[[0, 0, 10, 10], [20, 20, 60, 60], [100, 0, 160, 90]])
    batch = tiny_processor([sample])
    frames = tiny_model.get_frame_features(batch["pixel_values"], batch["depth_values"])
    patches = tiny_model.vision_tower(pixel_values=torch.cat([batch["pixel_values"], batch["depth_values"]]))
    torch.testing.assert_close(frames.image_tokens, tiny_model.rgb_connector(patches.last_hidden_state[:1]))
    torch.testing.assert_close(frames.depth_tokens, tiny_model.depth_connector(patches.last_hidden_state[1:]))
    depth_only = tiny_model.get_frame_features(None, batch["depth_values"])
    assert depth_only.image_tokens is None
    torch.testing.assert_close(depth_only.depth_tokens, frames.depth_tokens)
    rgb_only = tiny_model.get_frame_features(batch["pixel_values"])
    assert rgb_only.depth_tokens is None
    torch.testing.assert_close(rgb_only.image_tokens, frames.image_tokens)
    masks, index = batch["region_masks"], batch["region_sample_index"]
    eps = tiny_model.config.mask_pool_eps
    reference = tiny_model._apply_region_extensions(mask_pool(tiny_model.rgb_refiner(frames.image_tokens), masks, index, eps),
                                                    mask_pool(tiny_model.depth_refiner(frames.depth_tokens), masks, index, eps),
                                                    masks, index)
    shared = tiny_model.get_region_features(masks, index, frames)  # the default: forward's strategy
    explicit = tiny_model.get_region_features(masks, index, frames, strategy="shared")
    dense = tiny_model.get_region_features(masks, index, frames, strategy="dense")
    lazy = tiny_model.get_region_features(masks, index, strategy="lazy", maps=tiny_model.get_region_maps(frames))
    for got in (shared, explicit, dense, lazy):
        torch.testing.assert_close(got[0], reference[0])
        torch.testing.assert_close(got[1], reference[1])
    assert not torch.equal(reference[0][0], reference[0][1])  # distinct regions: the comparison means something


def test_shared_and_dense_pooling_give_the_same_vectors_and_gradients_with_frame_index(paper_model):
    """Two frames, three rows (rows 0 and 1 ask about frame 0): the training strategy against the reference."""
    torch.manual_seed(0)
    liven(paper_model)
    tokens, hidden, grid = paper_model.config.num_image_tokens, paper_model.config.text_config.hidden_size, \
        paper_model.config.mask_grid
    image, depth = torch.randn(2, tokens, hidden), torch.randn(2, tokens, hidden)
    masks = torch.zeros(4, grid, grid)
    masks[0, 0:10, 0:20], masks[1, 30:40, 5:9], masks[2, 50:64, 50:64], masks[3, 3:5, 40:60] = 1.0, 0.5, 1.0, 1.0
    index, frame_index = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1])
    weights = torch.linspace(-1, 1, 4 * hidden).reshape(4, hidden)
    results = []
    for strategy in ("shared", "dense"):
        paper_model.zero_grad()
        leaves = image.clone().requires_grad_(True), depth.clone().requires_grad_(True)
        rgb, dep = paper_model.get_region_features(masks, index, FrameFeatures(*leaves), frame_index, strategy=strategy)
        ((rgb - 2 * dep) * weights).sum().backward()
        grads = [p.grad.clone() for p in (*paper_model.rgb_refiner.parameters(), *paper_model.depth_refiner.parameters())]
        results.append((rgb.detach(), dep.detach(), leaves[0].grad, leaves[1].grad, grads))
    (*shared, shared_params), (*dense, dense_params) = results
    for a, b in zip(shared, dense):
        torch.testing.assert_close(a, b)
    for a, b in zip(shared_params, dense_params):
        torch.testing.assert_close(a, b)
    assert shared[2][0].abs().max() > 0 and shared[2][1].abs().max() > 0  # both frames receive gradient
    # the same as a copy of its frame per row, without frame_index
    with torch.no_grad():
        copies = paper_model.get_region_features(masks, index, FrameFeatures(image[frame_index], depth[frame_index]))
    torch.testing.assert_close(copies[0], shared[0])
    torch.testing.assert_close(copies[1], shared[1])


def test_get_region_features_names_a_wrong_strategy_or_source(paper_model):
    tokens, hidden = paper_model.config.num_image_tokens, paper_model.config.text_config.hidden_size
    frames = FrameFeatures(torch.randn(1, tokens, hidden), torch.randn(1, tokens, hidden))
    masks, index = torch.ones(1, paper_model.config.mask_grid, paper_model.config.mask_grid), torch.tensor([0])
    with pytest.raises(ValueError, match=r"unknown pooling strategy 'sparse' \(known: shared, dense, lazy\)"):
        paper_model.get_region_features(masks, index, frames, strategy="sparse")
    with pytest.raises(ValueError, match="go with strategy='lazy', and only with it"):
        paper_model.get_region_features(masks, index, strategy="lazy")
    with pytest.raises(ValueError, match="go with strategy='lazy', and only with it"):
        paper_model.get_region_features(masks, index, frames, maps=paper_model.get_region_maps(frames))
    for strategy in ("shared", "dense"):
        with pytest.raises(InputMismatchError, match="regions were given but the batch has no depth maps"):
            paper_model.get_region_features(masks, index, FrameFeatures(frames.image_tokens), strategy=strategy)
        with pytest.raises(InputMismatchError, match="regions were given without an image"):
            paper_model.get_region_features(masks, index, strategy=strategy)
    with pytest.raises(InputMismatchError, match="regions were given but the frame has no depth map"):
        paper_model.get_region_maps(FrameFeatures(frames.image_tokens))


@torch.no_grad()
def test_a_batch_without_regions_encodes_rgb_only(paper_model, tiny_processor, monkeypatch):
    """forward runs the public API: RGB alone through the encoder when no row has regions, and the depth
    connector and the refiners not at all."""
    calls = []
    original = paper_model.encode_patches
    monkeypatch.setattr(paper_model, "encode_patches", lambda x: calls.append(x.shape[0]) or original(x))
    for name in ("depth_connector", "rgb_refiner", "depth_refiner"):
        getattr(paper_model, name).register_forward_hook(lambda *_, name=name: calls.append(name))
    # frame-shared pooling runs a refiner's layers (its Sequential) on the covered tokens, not the module
    for name in ("rgb_refiner", "depth_refiner"):
        getattr(paper_model, name).refiner.register_forward_hook(lambda *_, name=name: calls.append(name))
    plain = tiny_processor([make_sample("a", question="What is in the picture?", answer="Pallets.", boxes=[]),
                            make_sample("b", seed=1, question="Is it a warehouse?", answer="Yes.", boxes=[])])
    depth = torch.rand_like(plain["pixel_values"])  # given, but no row asks about a region
    grid = paper_model.config.mask_grid
    for regions in ({}, {"region_masks": torch.zeros(0, grid, grid), "region_sample_index": torch.zeros(0, dtype=torch.long)}):
        paper_model(**_inputs(plain), depth_values=depth, **regions)
        assert calls == [2]
        calls.clear()
    paper_model(**_inputs(tiny_processor([make_sample("a"), make_sample("b", seed=1)])))
    assert calls == [4, "depth_connector", "rgb_refiner", "depth_refiner"]


def test_forward_pools_regions_through_get_region_features(paper_model, tiny_processor, monkeypatch):
    """Training reaches the regions through the one public entry point, so replacing it (as
    experiments/oracle_regions.py does on the class) replaces what is spliced."""
    batch = tiny_processor([make_sample("a"), make_sample("b", seed=1)])
    seen = []

    def fixed(self, masks, index, frames=None, frame_index=None, *, strategy="shared", maps=None):
        seen.append(strategy)
        rows = torch.arange(len(masks), dtype=torch.float32)[:, None]
        return rows.expand(-1, self.config.text_config.hidden_size), -rows.expand(-1, self.config.text_config.hidden_size)

    monkeypatch.setattr(SmolRGPTForConditionalGeneration, "get_region_features", fixed)
    embeds = paper_model.prepare_embeddings(batch["input_ids"], batch["pixel_values"], batch["depth_values"],
                                            batch["region_masks"], batch["region_sample_index"])
    assert seen == ["shared"]
    rgb = embeds[batch["input_ids"] == paper_model.config.mask_rgb_token_id]
    depth = embeds[batch["input_ids"] == paper_model.config.mask_depth_token_id]
    assert rgb[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and depth[:, -1].tolist() == [0.0, -1.0, -2.0, -3.0]
