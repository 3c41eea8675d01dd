"""SmolRGPTForConditionalGeneration: SigLIP encoder (shared by RGB and depth) + connectors + refiners +
mask pooling + a Llama-architecture language model, composed through transformers' Auto classes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from smolrgpt.modeling.config import SmolRGPTConfig
from smolrgpt.modeling.connector import Connector
from smolrgpt.modeling.extensions import RegionExtension, build_extensions
from smolrgpt.modeling.region import LazyRefinedMap, Refiner, is_non_decreasing, mask_pool, pool_refined


class InputMismatchError(ValueError):
    """The token ids and the visual inputs of a batch do not line up."""


def check_region_order(region_sample_index: torch.Tensor) -> None:
    if not is_non_decreasing(region_sample_index):
        raise InputMismatchError("regions must be ordered by row (region_sample_index non-decreasing)")


# How `get_region_features` pools: see its docstring.
POOLING_STRATEGIES = ("shared", "dense", "lazy")


def check_frame_index(frame_index: torch.Tensor, rows: int, frames: int | None) -> None:
    if frames is None:
        raise InputMismatchError("frame_index was given without an image")
    if frame_index.shape != (rows,):
        raise InputMismatchError(f"frame_index has shape {tuple(frame_index.shape)}, the batch has {rows} rows")
    if rows and (int(frame_index.min()) < 0 or int(frame_index.max()) >= frames):
        raise InputMismatchError(f"frame_index {frame_index.tolist()} points outside the {frames} frames given")
    if not is_non_decreasing(frame_index):
        raise InputMismatchError("rows must be ordered by frame (frame_index non-decreasing)")


@dataclass
class FrameFeatures:
    """What a frame contributes, computed once and reusable by every question about that frame."""

    image_tokens: torch.Tensor | None  # [B, N, H]: RGB connector outputs for the `<|image|>` positions
    depth_tokens: torch.Tensor | None = None  # [B, N, H]: depth connector outputs (only when regions need them)


def sincos_position_table(num_patches: int, dim: int) -> torch.Tensor:
    """[num_patches, dim] 2-D sine-cosine position codes of a square patch grid (half the channels code
    the column, half the row; each half is sin/cos over geometrically spaced frequencies)."""
    side = int(round(num_patches ** 0.5))
    if side * side != num_patches or dim % 4:
        raise ValueError(f"need a square patch grid and a width divisible by 4, got {num_patches} patches, width {dim}")
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter - 1, 1)))
    pos = torch.arange(side, dtype=torch.float64)[:, None] * freqs[None] * (torch.pi / side)
    code = torch.cat([torch.sin(pos), torch.cos(pos)], dim=1)  # [side, dim/2]
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.cat([code[cols.reshape(-1)], code[rows.reshape(-1)]], dim=1).float()


class SmolRGPTPreTrainedModel(PreTrainedModel):
    config: SmolRGPTConfig
    config_class = SmolRGPTConfig
    base_model_prefix = "smolrgpt"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["LlamaDecoderLayer", "SiglipEncoderLayer"]

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, RegionExtension):
            module.init_extension()
        elif isinstance(module, (nn.Linear, nn.ConvTranspose2d, nn.Conv2d)):
            # a module may ask for its own scale: the region extensions' output Linears start at zero (init_std 0)
            # so that switching a layer on starts out as the same model; an attribute on the Linear itself,
            # because loading a checkpoint that lacks only a layer's Linears initialises those alone
            std = getattr(module, "init_std", 0.02)
            if std:
                nn.init.normal_(module.weight, mean=0.0, std=std)
            else:
                nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif hasattr(module, "weight") and hasattr(module, "bias") and isinstance(module.weight, nn.Parameter) \
                and module.weight.dim() == 1:
            nn.init.ones_(module.weight)  # LayerNorm / LayerNorm2d
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif hasattr(module, "weight") and isinstance(getattr(module, "weight", None), nn.Parameter) \
                and module.weight.dim() == 1 and type(module).__name__.endswith("RMSNorm"):
            nn.init.ones_(module.weight)
        elif hasattr(module, "position_embedding") and isinstance(module.position_embedding, nn.Embedding):
            nn.init.normal_(module.position_embedding.weight, std=0.02)


class SmolRGPTForConditionalGeneration(SmolRGPTPreTrainedModel):
    _tied_weights_keys = {"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"}

    def __init__(self, config: SmolRGPTConfig):
        super().__init__(config)
        config.validate_architecture()
        vision_hidden = config.vision_config.hidden_size
        text_hidden = config.text_config.hidden_size
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.rgb_connector = Connector(vision_hidden, text_hidden, config.pixel_shuffle_factor)
        self.depth_connector = Connector(vision_hidden, text_hidden, config.pixel_shuffle_factor)
        self.rgb_refiner = Refiner(text_hidden, config.refiner_layers, config.layer_norm_2d_eps)
        self.depth_refiner = Refiner(text_hidden, config.refiner_layers, config.layer_norm_2d_eps)
        # each extension is a top-level module under its own attribute, so its state-dict keys are
        # `<attribute>.*` (as when they were switched by booleans)
        extensions = build_extensions(config)
        self.region_extension_attributes = tuple(extension.attribute for extension in extensions)
        for extension in extensions:
            self.add_module(extension.attribute, extension)
        self.post_init()

    @classmethod
    def from_scratch(cls, config: SmolRGPTConfig, sincos_positions: bool = True) -> "SmolRGPTForConditionalGeneration":
        """A new model with random weights (`smolrgpt init`, the presets' training start, tests).

        `sincos_positions`: the encoder's position table starts as a 2-D sin-cos table instead of SigLIP's
        random init, whose position vectors are about 4x weaker than the patch content (a linear probe then
        recovered a region's image x from its pooled vector with R^2 0.36 only, and left/right stayed at
        chance); sin-cos (MAE-style) makes position a smooth, strong signal from the first step. Weights
        loaded afterwards (a pretrained encoder, a checkpoint) replace it."""
        model = cls(config)
        if sincos_positions:
            embeddings = next(m for m in model.vision_tower.modules() if hasattr(m, "position_embedding"))
            table = sincos_position_table(embeddings.num_patches, embeddings.embed_dim)
            with torch.no_grad():
                embeddings.position_embedding.weight.copy_(table.to(embeddings.position_embedding.weight.dtype))
        return model

    # -- embeddings plumbing expected by transformers -------------------------------------------------
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    # -- the shared encoder ----------------------------------------------------------------------------
    def encode_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, P, D] patch features of the shared encoder (frozen: no graph kept). Called by
        `get_frame_features` only, so that counting its calls counts encoder passes (the tests do); callers
        outside the model use `get_frame_features`."""
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision_tower.parameters())
        with torch.set_grad_enabled(grad):
            pixel_values = pixel_values.to(dtype=self.vision_tower.dtype)
            return self.vision_tower(pixel_values=pixel_values).last_hidden_state

    # -- the public API: forward, generate, the engine and experiments compose these --------------------
    def get_frame_features(self, pixel_values: torch.Tensor | None,
                           depth_values: torch.Tensor | None = None) -> FrameFeatures:
        """Connector tokens of RGB images [A, 3, S, S] and of depth maps [B, 3, S, S], in one encoder pass.
        A and B may differ and either may be None: the engine encodes only what each cached frame lacks,
        and a batch without regions passes no depth maps (then neither the depth path nor, later, the
        refiners run)."""
        parts = [v for v in (pixel_values, depth_values) if v is not None]
        if not parts:
            raise InputMismatchError("get_frame_features needs images or depth maps")
        patches = self.encode_patches(torch.cat([v.to(parts[0].dtype) for v in parts]))
        count = 0 if pixel_values is None else pixel_values.shape[0]
        image = None if pixel_values is None else self.rgb_connector(patches[:count])
        depth = None if depth_values is None else self.depth_connector(patches[count:])
        return FrameFeatures(image, depth)

    def get_region_maps(self, frame: FrameFeatures) -> tuple[LazyRefinedMap, LazyRefinedMap]:
        """One frame's refined RGB and depth maps, built lazily under the masks pooled on them and kept, so
        later questions about the frame reuse the tokens already refined (`strategy="lazy"`)."""
        if frame.depth_tokens is None:
            raise InputMismatchError("regions were given but the frame has no depth map")
        return LazyRefinedMap(self.rgb_refiner, frame.image_tokens), LazyRefinedMap(self.depth_refiner,
                                                                                      frame.depth_tokens)

    def get_region_features(self, region_masks: torch.Tensor, region_sample_index: torch.Tensor,
                            frames: FrameFeatures | None = None, frame_index: torch.Tensor | None = None, *,
                            strategy: str = "shared", maps: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The one mask pooling entry point: finished region vectors (rgb, depth), [R, H] each, region r
        belonging to row `region_sample_index[r]` (non-decreasing). The vectors are the same up to float
        summation order whichever strategy pools them (modeling/region.py holds the kernels):

        - "shared" (training, `forward`): the refiners run once per frame of `frames` over the union of
          the tokens its regions' masks cover (`pool_refined`). With `frame_index` [B], row b asks about
          frame frame_index[b], so questions about one frame share its refined tokens.
        - "dense" (the reference): the full refined maps of `frames`, then `mask_pool`; `frame_index` as
          for "shared".
        - "lazy" (the engine): `maps`, one frame's `get_region_maps`, refined under the masks and kept for
          the frame's later questions; `frames` and `frame_index` are not used.

        Then each of the config's region extensions, in the registry's order."""
        if strategy not in POOLING_STRATEGIES:
            raise ValueError(f"unknown pooling strategy {strategy!r} (known: {', '.join(POOLING_STRATEGIES)})")
        if (strategy == "lazy") != (maps is not None):
            raise ValueError("`maps` (from get_region_maps) go with strategy='lazy', and only with it")
        eps = self.config.mask_pool_eps
        if strategy == "lazy":
            check_region_order(region_sample_index)
            rgb, depth = maps[0].pool(region_masks, eps), maps[1].pool(region_masks, eps)
        else:
            if frames is None:
                raise InputMismatchError("regions were given without an image")
            if frames.depth_tokens is None:
                raise InputMismatchError("regions were given but the batch has no depth maps")
            check_region_order(region_sample_index)  # before pooling, which relies on it
            region_frame = region_sample_index if frame_index is None else frame_index[region_sample_index]
            if strategy == "shared":
                rgb = pool_refined(self.rgb_refiner, frames.image_tokens, region_masks, region_frame, eps)
                depth = pool_refined(self.depth_refiner, frames.depth_tokens, region_masks, region_frame, eps)
            else:
                rgb = mask_pool(self.rgb_refiner(frames.image_tokens), region_masks, region_frame, eps)
                depth = mask_pool(self.depth_refiner(frames.depth_tokens), region_masks, region_frame, eps)
        return self._apply_region_extensions(rgb, depth, region_masks, region_sample_index)

    def _apply_region_extensions(self, rgb: torch.Tensor, depth: torch.Tensor, region_masks: torch.Tensor,
                                 region_sample_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled region vectors -> the vectors spliced into the prompt: the paper splices the pooled vectors
        as they are; a model with `config.region_extensions` passes them through each extension
        (modeling/extensions/), in the registry's order."""
        for attribute in self.region_extension_attributes:
            rgb, depth = getattr(self, attribute)(rgb, depth, region_masks, region_sample_index, self)
        return rgb, depth

    # -- splicing --------------------------------------------------------------------------------------
    def embed_inputs(self, input_ids: torch.Tensor, image_tokens: torch.Tensor | None,
                     region_rgb: torch.Tensor | None = None, region_depth: torch.Tensor | None = None,
                     region_sample_index: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the image vectors on the `<|image|>` positions and the k-th region's RGB
        and depth vectors on the k-th `<mask_rgb>` / `<mask_depth>` of each row. Counts are checked per
        row: a mismatch raises instead of silently shifting features between samples."""
        cfg = self.config
        embeds = self.get_input_embeddings()(input_ids)
        image_pos = input_ids == cfg.image_token_id
        rgb_pos = input_ids == cfg.mask_rgb_token_id
        depth_pos = input_ids == cfg.mask_depth_token_id
        batch = input_ids.shape[0]
        if image_tokens is None:
            if bool(image_pos.any()) or bool(rgb_pos.any()) or bool(depth_pos.any()):
                raise InputMismatchError("the prompt has image or mask tokens but no image was given")
            return embeds
        if image_tokens.shape[0] != batch:
            raise InputMismatchError(f"{image_tokens.shape[0]} frames for {batch} prompts")
        image_count = image_pos.sum(1)
        n_img = image_tokens.shape[1]
        if not bool((image_count == n_img).all()):
            bad = (image_count != n_img).nonzero().flatten().tolist()
            raise InputMismatchError(f"rows {bad} do not hold exactly {n_img} image tokens")
        embeds = embeds.masked_scatter(image_pos.unsqueeze(-1), image_tokens.to(embeds.dtype))
        n_regions = 0 if region_rgb is None else region_rgb.shape[0]
        rgb_count, depth_count = rgb_pos.sum(1), depth_pos.sum(1)
        per_row = (torch.bincount(region_sample_index, minlength=batch) if n_regions
                   else torch.zeros(batch, dtype=torch.long, device=input_ids.device))
        if not (bool((rgb_count == per_row).all()) and bool((depth_count == per_row).all())):
            raise InputMismatchError(
                f"mask tokens per row (rgb {rgb_count.tolist()}, depth {depth_count.tolist()}) do not match "
                f"regions per row {per_row.tolist()}"
            )
        if n_regions:
            check_region_order(region_sample_index)
            embeds = embeds.masked_scatter(rgb_pos.unsqueeze(-1), region_rgb.to(embeds.dtype))
            embeds = embeds.masked_scatter(depth_pos.unsqueeze(-1), region_depth.to(embeds.dtype))
        return embeds

    def prepare_embeddings(self, input_ids, pixel_values=None, depth_values=None, region_masks=None,
                           region_sample_index=None, frames: FrameFeatures | None = None,
                           frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """The public API end to end, as the engine composes it: `get_frame_features` (unless `frames` are
        given), `get_region_features` with the frame-shared strategy, then `embed_inputs` splices both.
        `frame_index` [B] (non-decreasing): row b asks about frame frame_index[b] of the F frames given, so
        questions about one frame share its encoding (a training batch groups them, `data.frame_group`).
        A batch without regions encodes RGB only: no depth pass, no refiners."""
        has_regions = region_masks is not None and region_masks.shape[0] > 0
        if frames is None and pixel_values is not None:
            frames = self.get_frame_features(pixel_values, depth_values if has_regions else None)
        if frame_index is not None:
            check_frame_index(frame_index, input_ids.shape[0], None if frames is None else frames.image_tokens.shape[0])
        region_rgb = region_depth = None
        if has_regions:
            if frames is None:
                raise InputMismatchError("regions were given without an image")
            region_rgb, region_depth = self.get_region_features(region_masks, region_sample_index, frames,
                                                                frame_index, strategy="shared")
        image_tokens = None if frames is None else frames.image_tokens
        if image_tokens is not None and frame_index is not None:
            image_tokens = image_tokens[frame_index]
        return self.embed_inputs(input_ids, image_tokens, region_rgb, region_depth,
                                 region_sample_index if has_regions else None)

    # -- training / scoring ----------------------------------------------------------------------------
    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, depth_values: torch.Tensor | None = None,
                region_masks: torch.Tensor | None = None, region_sample_index: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, frames: FrameFeatures | None = None,
                frame_index: torch.Tensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        embeds = self.prepare_embeddings(input_ids, pixel_values, depth_values, region_masks,
                                         region_sample_index, frames, frame_index)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    # -- generation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, depth_values: torch.Tensor | None = None,
                 region_masks: torch.Tensor | None = None, region_sample_index: torch.Tensor | None = None,
                 frames: FrameFeatures | None = None, frame_index: torch.Tensor | None = None,
                 inputs_embeds: torch.Tensor | None = None,
                 max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, eos_token_id: int | None = None, pad_token_id: int | None = None,
                 **kwargs) -> torch.LongTensor:
        """New tokens only, [B, T_new], each row stopping at `eos_token_id` (then padded with
        `pad_token_id`). Prompts must be LEFT-padded with an explicit attention mask. `inputs_embeds`
        (already spliced, e.g. from cached frame features) skips the encoders. The KV cache and the decode
        loop are transformers' generate() on the language model, fed our spliced embeddings."""
        if attention_mask is not None and input_ids.shape[0] > 1 and bool((attention_mask[:, -1] == 0).any()):
            raise InputMismatchError("batched generation needs left padding (a row ends with padding)")
        if inputs_embeds is None:
            inputs_embeds = self.prepare_embeddings(input_ids, pixel_values, depth_values, region_masks,
                                                    region_sample_index, frames, frame_index)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        sampling = dict(temperature=temperature, top_p=top_p, top_k=0) if do_sample else {}
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            do_sample=do_sample, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **sampling, **kwargs,
        )


def _register_auto_class() -> None:
    """So that AutoModelForImageTextToText and AutoProcessor load SmolRGPT folders once smolrgpt's model is
    imported (registered here, where the config is known, because the processor sits below the model)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from smolrgpt.processing.processor import SmolRGPTProcessor

    AutoModelForImageTextToText.register(SmolRGPTConfig, SmolRGPTForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(SmolRGPTConfig, SmolRGPTProcessor, exist_ok=True)


_register_auto_class()
