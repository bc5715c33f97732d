"""Peak memory of a training step and of generation, per model size, each in a fresh process.

    python -m bench memory                      # tiny, demo, mid on the CPU (peak RSS)
    python -m bench memory --device cuda        # the same on a GPU (torch.cuda.max_memory_allocated)
    python -m bench memory --smoke              # tiny only

Each case runs in its own spawned process so that peak RSS (`ru_maxrss`) belongs to that case only:
  * train: the model + aligner of bench/sizes.py, two optimizer steps (AdamW state allocated) on real
    micro-batches of the pipeline, fp32;
  * infer: the model alone (no aligner, no teacher), one image at the size's image_size, a vicuna
    prompt, `generate` 16 new tokens, `torch.inference_mode`, fp32.
Reported: RSS after imports, after building the model, and the peak; parameter memory for scale.
SmolLM2's weights are memory-mapped from safetensors, so the demo's RSS after building counts only
the pages touched so far: read the peak.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .common import Recorder, base_parser

COLUMNS = ("size", "mode", "params_mb", "rss_start_mb", "rss_model_mb", "peak_rss_mb", "peak_minus_model_mb",
           "gpu_peak_mb")


def measure_case(name: str, mode: str, device: str, threads: int | None = None) -> dict[str, Any]:
    """Runs inside a fresh process: build, run, report memory."""
    import numpy as np
    import torch
    from PIL import Image

    from .common import peak_rss_mb, rss_mb
    from .sizes import TrainStep, build, take_batches

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    start = rss_mb()
    built = build(name, data=mode == "train", with_aligner=mode == "train")
    params_mb = sum(p.numel() * p.element_size() for p in built.model.parameters()) / 2**20
    model_rss = rss_mb()
    if device == "cuda":
        built.model.to(device)
        if built.aligner is not None:
            built.aligner.to(device)
        torch.cuda.reset_peak_memory_stats()
    if mode == "train":
        step = TrainStep(built)
        for batch in take_batches(built, 2):
            step({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    else:
        size = built.model.config.image_size
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
        prompt = built.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = built.processor(text=prompt, images=[image])
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with torch.inference_mode():
            built.model.eval().generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                                        pad_token_id=built.processor.tokenizer.pad_token_id)
    result = {"params_mb": params_mb, "rss_start_mb": start, "rss_model_mb": model_rss, "peak_rss_mb": peak_rss_mb()}
    if device == "cuda":
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run(args) -> dict:
    rec = Recorder("memory", args)
    names = ["tiny"] if args.smoke else args.sizes
    context = multiprocessing.get_context("spawn")
    for name in names:
        for mode in args.modes:
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:  # a fresh process per case
                result = pool.submit(measure_case, name, mode, args.device, args.threads).result()
            rec.row(size=name, mode=mode, **result, peak_minus_model_mb=result["peak_rss_mb"] - result["rss_model_mb"])
    rec.note("RSS in MiB: rss_start after importing torch/transformers/eve_vlm, rss_model after building the "
             "model (and its data pipeline for train), peak = ru_maxrss of the case's own process.")
    return rec.finish(args.output, COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("memory", __doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: s.split(","), default=["tiny", "demo", "mid"],
                        help="comma-separated sizes of bench/sizes.py")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["train", "infer"], help="train,infer")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    run(parser.parse_args(argv))
    return 0
