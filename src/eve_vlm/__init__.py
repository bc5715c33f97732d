"""eve-vlm: encoder-free vision-language models (EVE, NeurIPS 2024).

Public API: `EveConfig`, `EveForCausalLM`, `EveProcessor`. Importing the package registers them
with transformers' Auto classes, so `AutoModelForCausalLM` / `AutoProcessor` load EVE checkpoints.
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

from .config import EveConfig
from .data.processor import EveProcessor
from .model.eve import EveForCausalLM

AutoConfig.register(EveConfig.model_type, EveConfig, exist_ok=True)
AutoModelForCausalLM.register(EveConfig, EveForCausalLM, exist_ok=True)
AutoProcessor.register(EveConfig, EveProcessor, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["EveConfig", "EveForCausalLM", "EveProcessor", "__version__"]
