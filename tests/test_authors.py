"""The authors' checkpoint importer: a checkpoint written here in their key layout, with known random
tensors, must give per module the outputs computed below straight from those tensors with plain torch
operations (written from the spec, not by calling our modules)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from smolrgpt.errors import CheckpointError
from smolrgpt.modeling.authors import import_authors_checkpoint

CFG = dict(vit_hidden_dim=32, vit_inter_dim=64, vit_patch_size=16, vit_img_size=64, vit_n_heads=2,
           vit_n_blocks=2, vit_ln_eps=1e-6, vit_cls_flag=False, lm_hidden_dim=48, lm_inter_dim=96,
           lm_rms_eps=1e-5, lm_re_base=100000, lm_max_position_embeddings=256, lm_base_vocab_size=40,
           lm_vocab_size=43, lm_n_heads=4, lm_n_kv_heads=2, lm_n_blocks=2, lm_tie_weights=True,
           mp_pixel_shuffle_factor=2, mp_image_token_length=4)


def _authors_tensors():
    g = torch.Generator().manual_seed(0)
    r = lambda *shape, s=0.2: torch.randn(*shape, generator=g) * s  # noqa: E731
    D, I, H, V, L = 32, 64, 48, 43, 96
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


@pytest.fixture()
def authors_checkpoint(tmp_path):
    tensors = _authors_tensors()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    return tmp_path, tensors


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


def test_importer_matches_plain_torch_per_module(authors_checkpoint):
    folder, t = authors_checkpoint
    model, report = import_authors_checkpoint(folder)
    model.eval()
    assert report.ok and report.mapped == len(t) - 1 + 4 * 2  # head tied; 4 fused qkv tensors (2 layers, w+b) -> 3 each
    assert model.config.image_token_id == 40 and model.config.mask_depth_token_id == 42
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


def test_importer_refuses_unmatched_keys(authors_checkpoint):
    folder, t = authors_checkpoint
    t = dict(t)
    t["MP.extra.weight"] = torch.zeros(2)
    del t["decoder.blocks.1.norm2.weight"]
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        import_authors_checkpoint(folder)
    message = str(info.value)
    assert "unused source keys (1):\n  MP.extra.weight" in message
    assert "language_model.model.layers.1.post_attention_layernorm.weight" in message


def test_importer_refuses_wrong_shapes(authors_checkpoint):
    folder, t = authors_checkpoint
    t = dict(t)
    t["MP.proj.weight"] = torch.zeros(48, 100)
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"rgb_connector.proj.weight: checkpoint \(48, 100\) vs model \(48, 128\)"):
        import_authors_checkpoint(folder)


def _forty_token_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from smolrgpt.processing.tokenizer import add_smolrgpt_tokens

    vocab = {t: i for i, t in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"w{i}" for i in range(37)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return add_smolrgpt_tokens(fast)


def test_convert_cli_writes_a_loadable_checkpoint(authors_checkpoint, tmp_path, monkeypatch, capsys):
    from smolrgpt.cli import main
    from smolrgpt.modeling import weights
    from smolrgpt.modeling.checkpoint import load_checkpoint
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer

    folder, _ = authors_checkpoint
    monkeypatch.setattr(weights, "tokenizer_for_preset", lambda preset, source=None: build_tiny_tokenizer())
    assert main(["convert", str(folder), str(tmp_path / "bad")]) == 2
    assert "do not match the checkpoint's" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    monkeypatch.setattr(weights, "tokenizer_for_preset", lambda preset, source=None: _forty_token_tokenizer())
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 0
    model, processor = load_checkpoint(tmp_path / "out")
    imported, _ = import_authors_checkpoint(folder)
    for (name, a), (_, b) in zip(imported.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert processor.num_image_tokens == 4 and processor.mask_grid_size == 16
