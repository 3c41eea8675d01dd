"""The authors' checkpoint importer on checkpoints laid out as their code writes them (authors_layout.py):
the imported model must give per module the outputs computed straight from the tensors with plain torch,
refuse what the file does not vouch for, and, from image files, give the region vectors of the authors'
preprocessing."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from smolrgpt.errors import CheckpointError
from smolrgpt.modeling.authors import import_authors_checkpoint

from authors_layout import (CFG, authors_tensors, ref_connector, ref_lm, ref_refiner, ref_vit, rewrite_checkpoint,
                            write_authors_checkpoint)
from authors_layout import authors_checkpoint, stand_in_tokenizer  # noqa: F401 (fixtures)


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


def test_an_untied_head_is_loaded_as_the_lm_head(tmp_path):
    tensors = authors_tensors()
    tensors["decoder.head.weight"] = tensors["decoder.head.weight"] * 0.5
    folder = write_authors_checkpoint(tmp_path / "a", tensors, {**CFG, "lm_tie_weights": False})
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert {"decoder.head.weight", "decoder.token_embedding.weight"} <= set(f.keys()) and not f.metadata()
    model, report = import_authors_checkpoint(folder)
    assert report.ok and not model.config.text_config.tie_word_embeddings
    torch.testing.assert_close(model.language_model.lm_head.weight, tensors["decoder.head.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.get_input_embeddings().weight, tensors["decoder.token_embedding.weight"],
                               rtol=0, atol=0)
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration

    model.save_pretrained(tmp_path / "saved")
    again = SmolRGPTForConditionalGeneration.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(again.language_model.lm_head.weight, tensors["decoder.head.weight"], rtol=0, atol=0)


def test_rope_buffer_must_match_the_config(tmp_path):
    folder = write_authors_checkpoint(tmp_path / "a", authors_tensors(), base=10000)
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


def _region_reference(t, rgb_file, depth_file, mask_file, depth_mode):
    """The authors' preprocessing and pooling, from the stated facts, with PIL and plain torch."""
    rgb = np.asarray(Image.open(rgb_file).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), np.float32)
    rgb = (torch.from_numpy(rgb).permute(2, 0, 1) / 255 - 0.5) / 0.5
    depth_rgb = Image.open(depth_file).convert("RGB")
    if depth_mode == "authors-training":
        depth = np.asarray(depth_rgb.resize((64, 64), Image.Resampling.NEAREST), np.float32)
        depth = torch.from_numpy(depth).permute(2, 0, 1) / 255
    else:  # the submission script: the RGB transform
        depth = np.asarray(depth_rgb.resize((64, 64), Image.Resampling.BILINEAR), np.float32)
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
        authors_checkpoint, tmp_path, stand_in_tokenizer, depth_mode):
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
    ellipse = ((xx - 40) / 25) ** 2 + ((yy - 50) / 18) ** 2 < 1
    Image.fromarray((ellipse * 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert main(["convert", str(folder), str(tmp_path / "ckpt"), "--depth-transform", depth_mode]) == 0
    model, processor = load_checkpoint(tmp_path / "ckpt")
    sample = Sample("q0", str(tmp_path / "rgb.png"), [("What is <mask> ?", None)],
                    [Region("mask", str(tmp_path / "m.png"))], depth=str(tmp_path / "depth.png"))
    batch = processor([sample], train=False)
    with torch.no_grad():
        frames = model.get_frame_features(batch["pixel_values"], batch["depth_values"])
        rgb, depth = model.get_region_features(batch["region_masks"], batch["region_sample_index"], frames)
    (ref_rgb, ref_depth), weights = _region_reference(t, tmp_path / "rgb.png", tmp_path / "depth.png",
                                                      tmp_path / "m.png", depth_mode)
    torch.testing.assert_close(batch["region_masks"][0], weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(rgb[0], ref_rgb, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(depth[0], ref_depth, rtol=1e-4, atol=1e-4)
    # The parity is not vacuous: our area averaging weighs the region's cells differently.
    ours = torch.from_numpy(area_average(np.asarray(Image.open(tmp_path / "m.png")) != 0, 16))
    assert (ours - weights).abs().max() > 0.1


def test_the_paper_models_config_maps_to_the_600m_preset():
    """The authors' config of the paper model (sizes from the spec's architecture table) gives our preset's
    architecture, a 64x64 mask grid (the size their code hard-codes) and the authors' pooling epsilon."""
    from smolrgpt.modeling.authors import config_from_authors
    from smolrgpt.modeling.config import SmolRGPTConfig

    paper = dict(vit_hidden_dim=768, vit_inter_dim=3072, vit_patch_size=16, vit_img_size=256, vit_n_heads=12,
                 vit_n_blocks=12, vit_ln_eps=1e-6, vit_cls_flag=False, lm_hidden_dim=960, lm_inter_dim=2560,
                 lm_rms_eps=1e-5, lm_re_base=100000, lm_max_position_embeddings=8192, lm_base_vocab_size=49152,
                 lm_vocab_size=49155, lm_n_heads=15, lm_n_kv_heads=5, lm_n_blocks=32, lm_tie_weights=True,
                 mp_pixel_shuffle_factor=2, mp_image_token_length=64,
                 lm_tokenizer="HuggingFaceTB/SmolLM2-360M-Instruct", stage="lp_warehouse")
    ours, preset = config_from_authors(paper), SmolRGPTConfig.from_preset("smolrgpt-600m")
    for part in ("vision_config", "text_config"):
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                    "patch_size", "num_key_value_heads", "vocab_size", "rope_parameters", "tie_word_embeddings",
                    "head_dim", "layer_norm_eps", "rms_norm_eps", "max_position_embeddings"):
            assert getattr(getattr(ours, part), key, None) == getattr(getattr(preset, part), key, None), (part, key)
    assert ours.text_config.rope_parameters["rope_theta"] == 100000.0 and ours.text_config.head_dim == 64
    assert (ours.mask_grid, ours.num_image_tokens, ours.image_token_id, ours.mask_depth_token_id) == (64, 64, 49152, 49154)
    assert ours.mask_pool_eps == 1e-8 and preset.mask_pool_eps == 1e-6
