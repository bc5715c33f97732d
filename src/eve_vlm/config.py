"""`EveConfig`: the whole EVE model (spec sections 2-5) as one `PretrainedConfig`.

A nested `text_config` holds any causal LM's config (Llama/Vicuna, Qwen2, SmolLM2, ...); the
remaining fields describe the Patch Embedding Layer, the image preprocessing and the Patch Aligning
Layer. Every field is validated once, on construction, with an error that names it.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, LlamaConfig, PretrainedConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class EveConfig(PretrainedConfig):
    r"""Configuration of an encoder-free EVE vision-language model.

    Args:
        text_config: config (or its dict) of the causal LM backbone; defaults to a Llama config.
        patch_size: pixels per side of one convolution patch (spec: 14).
        pool_size: side of the CA1 pooling window (spec: 2); one visual token covers
            `patch_size * pool_size` pixels per side (28).
        vision_width: width C of the PEL (spec: 1024 for EVE-7B).
        vision_heads: attention heads of CA1 and CA2 (spec: 8).
        projector_depth: number of Linear layers of the projector, GELU between (spec: 2).
        projector_norm: add a LayerNorm after the projector (not in the paper; helps a frozen LLM
            read visual tokens when they are initialised from its embedding statistics).
        image_size: longest image edge after resizing (672 default, 1344 for HD).
        size_multiple: the short edge is rounded up to a multiple of this (28; 56 at 1344, so the
            aligner's 2x pooling divides the grid).
        image_mean / image_std: normalisation of pixel values (CLIP's, as the paper).
        image_token_id: id of the `<image>` placeholder in the tokenizer (set by the processor
            builder; placeholder ids never reach the LLM's embedding table).
        template: the conversation template the model is trained with ("plain", "vicuna_v1" or
            "chat" for the LLM's own chat template); recorded so inference and eval use it.
        aligner_layer_interval: the PAL reads hidden states L, L-k, ..., 0 with k this value (4).
        aligner_heads: heads of the PAL's layer-wise attention (8).
        teacher_width: width Ct of the teacher's patch features (1024 for CLIP-ViT-L/14).
        initializer_range: std of the normal init of the PEL's Linear and conv weights.
    """

    model_type = "eve_vlm"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config: PretrainedConfig | dict[str, Any] | None = None,
        patch_size: int = 14,
        pool_size: int = 2,
        vision_width: int = 1024,
        vision_heads: int = 8,
        projector_depth: int = 2,
        projector_norm: bool = False,
        image_size: int = 672,
        size_multiple: int | None = None,
        image_mean: tuple[float, float, float] | list[float] = CLIP_MEAN,
        image_std: tuple[float, float, float] | list[float] = CLIP_STD,
        image_token_id: int | None = None,
        template: str = "vicuna_v1",
        aligner_layer_interval: int = 4,
        aligner_heads: int = 8,
        teacher_width: int = 1024,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        if text_config is None:
            text_config = LlamaConfig()
        elif isinstance(text_config, dict):
            text_config = dict(text_config)
            model_type = text_config.pop("model_type", "llama")
            text_config = AutoConfig.for_model(model_type, **text_config)
        self.text_config = text_config
        self.patch_size = patch_size
        self.pool_size = pool_size
        self.vision_width = vision_width
        self.vision_heads = vision_heads
        self.projector_depth = projector_depth
        self.projector_norm = projector_norm
        self.image_size = image_size
        token_pixels = patch_size * pool_size
        if size_multiple is None:  # 28 up to 672 px, 56 at 1344 (spec section 5)
            size_multiple = token_pixels * max(1, image_size // (24 * token_pixels))
        self.size_multiple = size_multiple
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.image_token_id = image_token_id
        self.template = template
        self.aligner_layer_interval = aligner_layer_interval
        self.aligner_heads = aligner_heads
        self.teacher_width = teacher_width
        self.initializer_range = initializer_range
        kwargs.setdefault("tie_word_embeddings", getattr(text_config, "tie_word_embeddings", False))
        # PretrainedConfig.__init__ sets the attention implementation on every sub-config; when the
        # text config belongs to a loaded LLM, keep its own (None would silently drop the causal mask)
        text_attention = getattr(text_config, "_attn_implementation_internal", None)
        super().__init__(**kwargs)
        if text_attention is not None and getattr(self.text_config, "_attn_implementation", None) is None:
            self.text_config._attn_implementation = text_attention
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, field: str, why: str) -> None:
            if not ok:
                raise ValueError(f"EveConfig.{field}={getattr(self, field)!r}: {why}")

        for field in ("patch_size", "pool_size", "vision_width", "vision_heads", "projector_depth",
                      "image_size", "size_multiple", "aligner_layer_interval", "aligner_heads",
                      "teacher_width"):
            need(isinstance(getattr(self, field), int) and getattr(self, field) > 0, field,
                 "must be a positive integer")
        need(self.vision_width % self.vision_heads == 0, "vision_width",
             f"must be divisible by vision_heads={self.vision_heads}")
        need(self.teacher_width % self.aligner_heads == 0, "teacher_width",
             f"must be divisible by aligner_heads={self.aligner_heads}")
        need(self.projector_depth >= 1, "projector_depth", "must be at least 1")
        token_pixels = self.patch_size * self.pool_size
        need(self.size_multiple % token_pixels == 0, "size_multiple",
             f"must be a multiple of patch_size*pool_size={token_pixels}")
        need(self.image_size % self.size_multiple == 0, "image_size",
             f"must be a multiple of size_multiple={self.size_multiple}")
        for field in ("image_mean", "image_std"):
            need(len(getattr(self, field)) == 3, field, "must hold 3 values (R, G, B)")
        need(all(s > 0 for s in self.image_std), "image_std", "must be positive")
        need(self.template in ("plain", "vicuna_v1", "chat"), "template",
             "must be one of 'plain', 'vicuna_v1', 'chat'")
        need(self.initializer_range > 0, "initializer_range", "must be positive")
        for field in ("hidden_size", "num_hidden_layers", "vocab_size"):
            if not hasattr(self.text_config, field):
                raise ValueError(f"EveConfig.text_config has no {field!r}: not a causal LM config")

    @property
    def hidden_size(self) -> int:
        """Width D of the LLM, which the projector maps visual tokens to."""
        return self.text_config.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    def get_text_config(self, *args: Any, **kwargs: Any) -> PretrainedConfig:
        return self.text_config
