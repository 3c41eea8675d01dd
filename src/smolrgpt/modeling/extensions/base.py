"""What a region extension declares: how the model, its init and the training recipe handle it."""
from __future__ import annotations

import torch
from torch import nn

from smolrgpt.modeling.families import PAPER_MODULE_FAMILY


class RegionExtension(nn.Module):
    """A step that turns pooled region vectors into the vectors spliced into the prompt (not in the paper).

    Subclasses set:
      name       the name in `config.region_extensions`
      attribute  the model attribute holding it: its parameters' state-dict prefix
      family     the learning-rate family (optim.lr.<family>, one of modeling/families.py) its parameters
                 train with, by default the language model's; None: none to train
      stages     the curriculum stages that train it
    and may override `for_model` (build from the config) and `init_extension` for parameters the model's generic init does not cover (its Linears
    are initialised as the model's are, at `init_std` where a Linear sets one)."""

    name: str
    attribute: str
    family: str | None = PAPER_MODULE_FAMILY["language_model"]
    stages: tuple[int, ...] = (3,)

    @classmethod
    def for_model(cls, config) -> "RegionExtension":
        """The extension sized for a model of `config` (a SmolRGPTConfig)."""
        return cls()

    @torch.no_grad()
    def init_extension(self) -> None:
        """Initialise the extension's own parameters (called by the model's `_init_weights`)."""

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, masks: torch.Tensor, sample_index: torch.Tensor,
                model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Region vectors [R, C] (RGB and depth), masks [R, G, G], rows [R] -> the updated vectors."""
        raise NotImplementedError
