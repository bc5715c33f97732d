"""Model code: the PEL, the PAL (training only) and the EVE causal LM."""

from .aligner import PatchAligner, aligner_layers, alignment_loss
from .eve import EveForCausalLM, EvePreTrainedModel
from .patch_embed import PatchEmbed, image_grid, num_image_tokens

__all__ = ["EveForCausalLM", "EvePreTrainedModel", "PatchAligner", "PatchEmbed", "aligner_layers",
           "alignment_loss", "image_grid", "num_image_tokens"]
