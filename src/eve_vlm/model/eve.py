"""`EveForCausalLM`: a decoder-only LLM that reads image patches through the PEL (spec sections 2-3).

text ids -> embeddings; images -> PEL -> projector -> visual tokens; the count of `<image>`
placeholder positions must equal the count of visual tokens; visual tokens are scattered into the
placeholder positions; the LLM runs on the merged embeddings with a plain causal mask and 1-D RoPE.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..config import EveConfig
from .patch_embed import PatchEmbed, Projector, num_image_tokens

PixelValues = torch.Tensor | Sequence[torch.Tensor]


class EvePreTrainedModel(PreTrainedModel):
    config_class = EveConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["PatchEmbed"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, PatchEmbed):  # spec: CLS and SPLIT ~ N(0, 1)
            nn.init.normal_(module.cls_embedding, 0.0, 1.0)
            nn.init.normal_(module.split_embedding, 0.0, 1.0)
        elif isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class EveForCausalLM(EvePreTrainedModel, GenerationMixin):
    """EVE: PEL + projector + any causal LM. Knows nothing of devices, optimisers or the teacher."""

    def __init__(self, config: EveConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.patch_embed = PatchEmbed(config.vision_width, config.vision_heads, config.patch_size,
                                      config.pool_size)
        self.projector = Projector(config.vision_width, config.hidden_size, config.projector_depth,
                                   config.projector_norm)
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()
        if getattr(self.language_model.config, "_attn_implementation", None) is None:  # never maskless
            self.language_model.set_attn_implementation(self.config._attn_implementation or "sdpa")

    # --- plumbing transformers expects of a causal LM -------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    # --- vision ---------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: PixelValues) -> list[torch.Tensor]:
        """Visual tokens of each image, in order: a list of (1 + h*(w+1), D) tensors.

        `pixel_values` is a (N, 3, H, W) batch of equal-size images or a list of (3, H_i, W_i).
        Images of one size run through the PEL as one batch; sizes are grouped, order is kept.
        """
        images = list(pixel_values.unbind(0)) if isinstance(pixel_values, torch.Tensor) else list(pixel_values)
        if isinstance(pixel_values, torch.Tensor) and pixel_values.dim() == 4:
            return list(self._embed_same_size(pixel_values).unbind(0))
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
        features: list[torch.Tensor | None] = [None] * len(images)
        for indices in by_size.values():
            batch = self._embed_same_size(torch.stack([images[i] for i in indices]))
            for i, tokens in zip(indices, batch.unbind(0)):
                features[i] = tokens
        return features  # type: ignore[return-value]

    def _embed_same_size(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + h*(w+1), D)."""
        weight = self.patch_embed.conv.weight
        pixel_values = pixel_values.to(device=weight.device, dtype=weight.dtype)
        return self.projector(self.patch_embed(pixel_values))

    def embed_inputs(self, input_ids: torch.LongTensor, pixel_values: PixelValues | None = None) -> torch.Tensor:
        """Token embeddings with each image's visual tokens scattered into its placeholder run."""
        image_mask = input_ids == self.config.image_token_id  # (B, T)
        # placeholder ids may lie outside the LLM's vocabulary: embed a harmless id, then overwrite
        inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))  # (B, T, D)
        num_placeholders = int(image_mask.sum())
        if pixel_values is None or len(pixel_values) == 0:
            if num_placeholders:
                raise ValueError(f"input_ids hold {num_placeholders} image placeholder tokens but no "
                                 "pixel_values were given")
            return inputs_embeds
        features = torch.cat(self.get_image_features(pixel_values), dim=0)  # (sum of tokens, D)
        if num_placeholders != features.shape[0]:
            raise ValueError(f"image placeholder tokens ({num_placeholders}) and visual tokens "
                             f"({features.shape[0]}) do not match")
        mask = image_mask.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.dtype))

    # --- forward --------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: PixelValues | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """The usual causal-LM output (loss on `labels` != -100, logits, cache, hidden states).

        `logits_to_keep` (named here so `generate()` asks only for the last position's logits at
        prefill) and other keyword arguments (position_ids, the KV cache, use_cache,
        output_hidden_states, ...) go to the language model unchanged.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        elif pixel_values is not None:
            raise ValueError("pixel_values cannot be combined with inputs_embeds; pass input_ids")
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   labels=labels, logits_to_keep=logits_to_keep, **kwargs)

    def num_image_tokens(self, height: int, width: int) -> int:
        return num_image_tokens(height, width, self.config.patch_size, self.config.pool_size)

    # --- building around an existing LLM -------------------------------------------------------
    @classmethod
    def from_text_model(cls, text_model: str | Path | PreTrainedModel, **config_kwargs: Any) -> EveForCausalLM:
        """An EVE around a pretrained causal LM (a path/hub id or a loaded model); a fresh PEL.

        `config_kwargs` set the `EveConfig` fields (vision_width, image_size, ...). With
        `projector_norm=True` the output LayerNorm starts at the word embeddings' per-dimension
        mean and std, so the first visual tokens already look like words to the LLM.
        """
        if not isinstance(text_model, PreTrainedModel):
            text_model = AutoModelForCausalLM.from_pretrained(text_model)
        config = EveConfig(text_config=text_model.config, **config_kwargs)
        model = cls(config, language_model=text_model)
        if config.projector_norm:
            with torch.no_grad():
                embeddings = text_model.get_input_embeddings().weight.float()
                model.projector.norm.weight.copy_(embeddings.std(dim=0))
                model.projector.norm.bias.copy_(embeddings.mean(dim=0))
        return model.to(text_model.dtype)
