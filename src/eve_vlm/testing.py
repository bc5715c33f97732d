"""Tiny random-weight EVE models and an in-memory tokenizer: for tests, smoke runs and examples.

Nothing here touches the network or the disk.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, PreTrainedTokenizerFast

from .config import EveConfig
from .data.processor import EveProcessor
from .model.eve import EveForCausalLM

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_CORPUS = [
    "a handwritten digit zero one two three four five six seven eight nine",
    "What digit is this? What does this emoji show? Answer the question using a single word or phrase.",
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. USER: ASSISTANT:",
    "the cat sat on the mat with a red ball and a blue box, yes no maybe 0 1 2 3 4 5 6 7 8 9",
    "astronaut rocket horse coffee camera moon smiling face with heart eyes",
]


def tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in memory on a few sentences, with <s>, </s>, <pad> and a chat template."""
    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(model_type: str = "llama", **overrides: Any) -> EveConfig:
    """A 2-layer, 64-wide LLM and a 32-wide PEL: runs in milliseconds on a CPU."""
    text = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 128, "vocab_size": 512, "max_position_embeddings": 4096,
            "tie_word_embeddings": False}
    text.update(overrides.pop("text", {}))
    fields = {"vision_width": 32, "vision_heads": 4, "image_size": 112, "teacher_width": 16,
              "aligner_heads": 4, "template": "vicuna_v1"}
    fields.update(overrides)
    return EveConfig(text_config=AutoConfig.for_model(model_type, **text), **fields)


def tiny_model_and_processor(model_type: str = "llama", seed: int = 0,
                             **overrides: Any) -> tuple[EveForCausalLM, EveProcessor]:
    """A random tiny EVE and its processor (tokenizer vocabulary fits the LLM's)."""
    import torch

    config = tiny_config(model_type, **overrides)
    processor = EveProcessor.from_config(tiny_tokenizer(), config)
    torch.manual_seed(seed)
    model = EveForCausalLM(config).eval()
    return model, processor
