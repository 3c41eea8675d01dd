"""Checkpoints written the way the authors' code writes them, for the importer and `convert` tests: a small
module tree in their naming (nanoVLM's ViT and Llama, the connectors `MP`/`MP_depth`, the refiners) with known
random tensors, saved by `safetensors.torch.save_model` (the tied head kept, the embedding dropped and recorded
in the metadata, the RoPE buffer stored); their release `.tar` of stage folders nested as their trainer saves
them; and the per-module reference computations in plain torch, written from the spec."""
import json
import math
import tarfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file, save_model


CFG = dict(vit_hidden_dim=32, vit_inter_dim=64, vit_patch_size=16, vit_img_size=64, vit_n_heads=2,
           vit_n_blocks=2, vit_ln_eps=1e-6, vit_cls_flag=False, lm_hidden_dim=48, lm_inter_dim=96,
           lm_rms_eps=1e-5, lm_re_base=100000, lm_max_position_embeddings=256, lm_base_vocab_size=40,
           lm_vocab_size=43, lm_n_heads=4, lm_n_kv_heads=2, lm_n_blocks=2, lm_tie_weights=True,
           mp_pixel_shuffle_factor=2, mp_image_token_length=4,
           lm_tokenizer="HuggingFaceTB/SmolLM2-360M-Instruct", stage="lp_warehouse")


def authors_tensors(vocab=43):
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


def authors_module_tree(base=100000, vocab=43, tied=True):
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
    if tied:
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
    tied = config.get("lm_tie_weights", True)
    model = authors_module_tree(base, config["lm_vocab_size"], tied)
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in tensors.items() if not tied or k != "decoder.head.weight"}, strict=False)
    assert missing == ["decoder.rotary_embd.inv_freq"] + ["decoder.head.weight"] * tied and not unexpected
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
    tensors = authors_tensors()
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


def error_line(capsys) -> str:
    """The CLI's error line (stderr also holds progress bars)."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("smolrgpt convert: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("smolrgpt convert: error: ")


def forty_token_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from smolrgpt.processing.tokenizer import add_smolrgpt_tokens

    vocab = {t: i for i, t in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"w{i}" for i in range(37)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return add_smolrgpt_tokens(fast)


@pytest.fixture()
def stand_in_tokenizer(monkeypatch):
    """Stands in for the SmolLM2 tokenizer (vocabulary 40 + 3, like the fixture's config)."""
    from smolrgpt.modeling import weights

    monkeypatch.setattr(weights, "tokenizer_for_authors",
                        lambda named, source=None: (forty_token_tokenizer(), f"test tokenizer for {named}"))


def stage_tensors(scale):
    t = authors_tensors()
    t["MP.proj.weight"] = t["MP.proj.weight"] * scale  # tells the stages apart
    return t


def write_weights_tar(tmp_path, names=("best_rgb_align_0520", "best_refiners_align_0603", "best_lp_warehouse_0611")):
    """Their release: each stage saved inside the previous stage's folder, all packed as weights.tar."""
    root, folder = tmp_path / "release", tmp_path / "release"
    for i, name in enumerate(names):
        folder = write_authors_checkpoint(folder / name, stage_tensors(i + 1.0),
                                          {**CFG, "stage": name.split("_", 1)[1].rsplit("_", 1)[0]})
    with tarfile.open(tmp_path / "weights.tar", "w") as tar:
        tar.add(root / names[0], arcname=names[0])
    return tmp_path / "weights.tar"
