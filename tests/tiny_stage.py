"""The tiny training stage the train and reliability tests build on (a 4-layer random LLM, shapes data)."""

TINY_STAGE = {
    "name": "test-stage",
    "model": {
        "text_config": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 512,
                        "max_position_embeddings": 512},
        "tokenizer": "tiny",
        "eve": {"vision_width": 16, "vision_heads": 4, "image_size": 56, "aligner_heads": 4, "template": "plain"},
    },
    "template": "plain",
    "align_weight": 1.0,
    "data": {"sources": [{"kind": "shapes", "options": {"size": 64, "task": "caption", "image_size": 48}}],
             "max_length": 64},
    "optim": {"lr": {"pel": 1e-2, "aligner": 1e-2}, "warmup_ratio": 0.0},
    "global_batch": 4,
    "micro_batch": 2,
    "max_steps": 6,
    "log_every": 1,
    "checkpoint_every": 3,
    "seed": 0,
    "precision": "fp32",  # the exact-equality tests compare runs; bf16 autocast has its own test
}
