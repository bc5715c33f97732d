"""The one prepared GPU run (H100/H200): a 7B-wide EVE's training and inference, and the vision side.

    PYTHONPATH=src python bench/gpu.py            # on the GPU machine, from the repo root (< 8 minutes)
    PYTHONPATH=src python bench/gpu.py --smoke    # tiny sizes on the CPU: proves every section runs

Sections (each in try/except: an error is recorded and the next section runs; the JSON is written
after every section, to $OUT/gpu.json when OUT is set, else runs/bench/gpu.json, or --output):
  * device: name, memory, versions; the dense bf16 peak of the chip's spec sheet (H100 SXM and H200:
    989 TFLOP/s, H100 PCIe 756) and the measured peak of an 8192^3 bf16 matmul;
  * vision_train: PEL + projector + aligner forward+backward, 8 x 672 px, C=1024, D=4096, Ct=1024,
    9 aligner layers, bf16: ours (batched) vs the reference's per-image loop style (bench/reference_style.py);
  * vision_profile: ours of vision_train with each way of attending over a few keys (elementwise, as
    shipped; batched matmuls; fused SDPA), and the top kernels of a profiled step;
  * train_step: a full training step (PEL + LLM + aligner, CE + alignment loss, forward + backward) at
    7B width (D=4096, 8 layers, vocab 32000), 2 x 672 px, bf16: ours vs the reference code's path
    (per-image vision side and aligner, full-vocabulary logits; bench/train_step.py), same weights;
  * train_nockpt / train: EVE around a Llama-2-7B-shaped LLM (D=4096, 32 heads, MLP 11008, vocab 32000)
    with as many decoder layers as the memory estimate allows (tried, then fewer on out-of-memory),
    PEL C=1024, the aligner on (random teacher features), 672 px images in 2048-token sequences, pure
    bf16 weights + fused AdamW (no fp32 master copy), SDPA (flash) attention, no padding; `train_nockpt`
    keeps every activation (fewer layers fit, no recomputation), `train_compiled` is that with every
    decoder layer torch.compile'd (`compile: true` in a recipe), `train` checkpoints every layer.
    MFU = model FLOPs (FlopCounterMode: forward + backward, checkpoint recomputation subtracted) / step
    time / spec peak; HFU counts the recomputation too;
  * inference: the full 32-layer 7B-shaped EVE in bf16: time to first token and decode tokens/s
    (greedy, KV cache) at batch 1 and 32, one 672 px image + 48 text tokens per prompt.
A global time guard (--budget seconds from start-up, default 420) skips sections that no longer fit
and interrupts one that overruns; a hard stop at budget + 40 s ends the process (results so far are
already on disk).
"""

from __future__ import annotations

import time

START = time.time()

import argparse  # noqa: E402
import faulthandler  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "src", ROOT):  # the bench package and eve_vlm, also without PYTHONPATH
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from transformers import LlamaConfig  # noqa: E402

from bench.common import flop_counter, machine_info, matmul_peak  # noqa: E402
from eve_vlm.config import EveConfig  # noqa: E402
from eve_vlm.model.aligner import PatchAligner  # noqa: E402
from eve_vlm.model.eve import EveForCausalLM  # noqa: E402
from eve_vlm.model.patch_embed import FEW_KEYS, image_grid, num_image_tokens  # noqa: E402
from eve_vlm.train.losses import AlignedEve  # noqa: E402
from eve_vlm.train.setup import compile_layers  # noqa: E402

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
TINY_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=4, vocab_size=512, max_position_embeddings=4096)


class GuardTimeout(Exception):
    """The global time guard fired."""


def spec_peak_bf16(name: str) -> float | None:
    """Dense bf16 peak FLOP/s from the spec sheet, by device name."""
    if "H200" in name or "GH200" in name:
        return 989e12
    if "H100" in name:
        return 756e12 if "PCIe" in name else 989e12
    if "A100" in name:
        return 312e12
    return None


class Plan:
    """Sizes for the real run (GPU) or the smoke run (CPU)."""

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
        self.dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
        self.llm = TINY_LLM if smoke else LLAMA2_7B
        self.width, self.heads = (32, 4) if smoke else (1024, 8)
        self.teacher_width = 16 if smoke else 1024
        self.image = 56 if smoke else 672
        self.seq = 64 if smoke else 2048
        self.micro_batch = 2 if smoke else 4
        self.steps, self.warmup = (2, 1) if smoke else (5, 2)
        self.new_tokens = 4 if smoke else 64
        self.big_batch = 4 if smoke else 32
        self.vision = dict(batch=2, image_size=112, width=32, heads=4, llm_width=64, teacher_width=16, llm_layers=8) \
            if smoke else dict(batch=8, image_size=672, width=1024, heads=8, llm_width=4096, teacher_width=1024,
                               llm_layers=32)


def sync(plan: Plan) -> None:
    if plan.device == "cuda":
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_eve(plan: Plan, layers: int) -> EveForCausalLM:
    """EVE around a random LLM of the plan's shape with `layers` decoder layers, built on the device."""
    text_config = LlamaConfig(**{**plan.llm, "num_hidden_layers": layers})
    config = EveConfig(text_config=text_config, vision_width=plan.width, vision_heads=plan.heads,
                       image_size=plan.image, teacher_width=plan.teacher_width,
                       image_token_id=text_config.vocab_size - 1)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(plan.dtype)
    try:
        with torch.device(plan.device):
            model = EveForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=plan.device, dtype=plan.dtype)


def prompt_ids(plan: Plan, batch: int, length: int | None = None) -> tuple[torch.Tensor, int]:
    """(batch, length) ids: 16 text tokens, one image's placeholders, then text; and the image start."""
    image_tokens = num_image_tokens(plan.image, plan.image)
    length = length or (16 + image_tokens + 32)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, plan.llm["vocab_size"] - 10, (batch, length), generator=generator)
    ids[:, 16:16 + image_tokens] = plan.llm["vocab_size"] - 1
    return ids.to(plan.device), 16


# --- sections --------------------------------------------------------------------------------------------
def section_device(plan: Plan) -> dict:
    info = machine_info()
    out = {"machine": info, "device": plan.device, "dtype": str(plan.dtype)}
    if plan.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name()
        out.update(name=name, memory_gib=props.total_memory / 2**30, multiprocessors=props.multi_processor_count,
                   spec_peak_bf16_tflops=(spec_peak_bf16(name) or 0) / 1e12 or None)
        out["measured_matmul_bf16_tflops"] = matmul_peak(8192, 10, torch.bfloat16, "cuda") / 1e12
    else:
        out["measured_matmul_fp32_gflops"] = matmul_peak(512, 3) / 1e9
    return out


def versus_reference(plan: Plan, bench_module: str, sizes: dict, target_speedup: float) -> dict:
    """A bench module's ours-vs-reference-style comparison (its build, ours_loss, reference_loss, train_step)
    on the plan's device and dtype: the losses' difference, then median fwd+bwd times of each side."""
    import importlib

    from bench.common import measure

    module = importlib.import_module(bench_module)
    case = module.build(**sizes, device=plan.device, dtype=plan.dtype)
    with torch.no_grad():
        agree = float((module.ours_loss(case) - module.reference_loss(case)).abs())
    repeats, warmup = (2, 1) if plan.smoke else (10, 3)
    timings = {name: measure(lambda f=fn: module.train_step(case, f), repeats, warmup, plan.device)["median_s"]
               for name, fn in (("reference", module.reference_loss), ("ours", module.ours_loss))}
    ref, ours = timings["reference"], timings["ours"]
    out = {**sizes, "dtype": str(plan.dtype), "reference_style_ms": ref * 1e3, "ours_ms": ours * 1e3,
           "speedup": ref / ours, "target_speedup": target_speedup, "met": ref / ours >= target_speedup,
           "loss_abs_diff": agree}
    if plan.device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def section_vision_train(plan: Plan) -> dict:
    return versus_reference(plan, "bench.vision_train", plan.vision, 4.0)


def _attend_matmul(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """`patch_embed.attend` with the few-key case as batched matmuls (an alternative, for timing)."""
    if k.shape[-2] > FEW_KEYS:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
    weights = (q @ k.transpose(-1, -2) * scale).softmax(-1, dtype=torch.float32)
    return weights.to(v.dtype) @ v


def _attend_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Every attention through the fused kernel (the implementation before the elementwise few-key case)."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)


def section_vision_profile(plan: Plan, top: int = 15) -> dict:
    """Where ours spends a vision-side training step: the same step with each way of attending over a
    few keys (timed round-robin, 3 rounds), then the `top` kernels of the shipped one (torch.profiler,
    self device time per step)."""
    from torch.profiler import ProfilerActivity, profile

    import eve_vlm.model.aligner as aligner_module
    import eve_vlm.model.patch_embed as pel_module
    from bench import vision_train
    from bench.common import measure

    side = vision_train.build(**plan.vision, device=plan.device, dtype=plan.dtype)
    shipped = pel_module.attend
    variants = {"elementwise (shipped)": shipped, "batched matmuls": _attend_matmul, "fused SDPA": _attend_sdpa}

    def use(fn) -> None:  # CrossAttention and PatchAligner look `attend` up in their modules
        pel_module.attend = aligner_module.attend = fn

    repeats, warmup = (2, 1) if plan.smoke else (10, 3)
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(1 if plan.smoke else 3):
            for name, fn in variants.items():
                use(fn)
                step = lambda: vision_train.train_step(side, vision_train.ours_loss)  # noqa: E731
                times[name].append(measure(step, repeats, warmup, plan.device)["median_s"] * 1e3)
    finally:
        use(shipped)
    steps = 3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if plan.device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            vision_train.train_step(side, vision_train.ours_loss)
        sync(plan)
    key = "self_device_time_total" if plan.device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    kernels = [{"name": e.key[:120], "ms_per_step": getattr(e, key) / 1e3 / steps, "calls_per_step": e.count / steps}
               for e in events]
    return {**plan.vision, "dtype": str(plan.dtype), "attend_ms": times, "profiled": key, "top": kernels}


def estimate_layers(plan: Plan, memory_bytes: float, checkpointing: bool = True) -> int:
    """Most decoder layers whose weights, grads, AdamW state (8 bytes/param, all bf16) and
    activations (checkpointed: each layer's input; else all a layer keeps for backward) fit in 90% of
    the device memory."""
    d, i, v = plan.llm["hidden_size"], plan.llm["intermediate_size"], plan.llm["vocab_size"]
    per_layer = 4 * d * d + 3 * d * i
    fixed = 2 * v * d + (plan.width * 3 * 196 + 8 * plan.width**2) + (plan.width * d + d * d) \
        + 10 * d * plan.teacher_width
    tokens = plan.micro_batch * plan.seq
    activations_per_layer = tokens * d * 2 * 2  # checkpoint input + the hidden state the aligner may read
    if not checkpointing:  # q, k, v, attention out, o, 2 norms, residuals (~12 d) + gate, up, act, down in (4 i)
        activations_per_layer = tokens * (12 * d + 4 * i) * 2
    working = tokens * (40 * d + 12 * i) * 2 + tokens * v * 12 + 3e9  # one layer's recompute, logits+loss, slack
    budget = 0.9 * memory_bytes - 8 * fixed - working
    return max(1, min(plan.llm["num_hidden_layers"], int(budget // (8 * per_layer + activations_per_layer))))


def train_batch(plan: Plan) -> dict:
    b, t = plan.micro_batch, plan.seq
    ids, start = prompt_ids(plan, b, t)
    h, w = image_grid(plan.image, plan.image)
    labels = ids.clone()
    labels[:, : start + num_image_tokens(plan.image, plan.image)] = -100
    grid = start + 1 + torch.arange(h * (w + 1), device=plan.device).view(h, w + 1)[:, :w].reshape(-1)
    positions = (grid[None] + t * torch.arange(b, device=plan.device)[:, None]).reshape(-1, 1)
    return {"input_ids": ids, "labels": labels, "attention_mask": None,
            "pixel_values": torch.randn(b, 3, plan.image, plan.image, device=plan.device, dtype=plan.dtype),
            "patch_positions": positions,
            "patch_image": torch.arange(b, device=plan.device).repeat_interleave(h * w),
            "teacher_features": torch.randn(b * h * w, plan.teacher_width, device=plan.device, dtype=plan.dtype)}


def layer_forward_flops(counts: dict) -> int:
    """FLOPs inside the LLM's decoder layers (what checkpointing recomputes), from a per-module count."""
    return sum(sum(ops.values()) for name, ops in counts.items() if re.search(r"\.layers\.\d+$", name))


def train_attempt(plan: Plan, layers: int, checkpointing: bool = True, compiled: bool = False) -> dict:
    from torch.utils.checkpoint import set_checkpoint_early_stop

    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = build_eve(plan, layers)
    aligner = PatchAligner(model.config.hidden_size, plan.teacher_width, layers, 4, 8).to(plan.device, plan.dtype)
    if not checkpointing:
        pass
    elif hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x names it so
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    stage = AlignedEve(model, aligner).train()
    params = [p for p in stage.parameters() if p.requires_grad]
    # fused: no foreach temporaries (a full extra copy of the parameters at 7B scale)
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=plan.device == "cuda")
    batch = train_batch(plan)

    def forward_backward() -> None:
        stage(batch, batch["teacher_features"])["loss"].backward()

    def step() -> None:
        forward_backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # FLOPs are counted eagerly (the counter does not see inside compiled graphs; the math is the same)
    with set_checkpoint_early_stop(False), flop_counter() as counter:  # full recomputation, countable
        forward_backward()
    hardware_flops = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    recompute_flops = 0
    if checkpointing:
        with flop_counter() as counter:  # forward only (grad enabled: the module tracker needs it)
            stage(batch, batch["teacher_features"])
        recompute_flops = layer_forward_flops(counter.get_flop_counts())
    model_flops = hardware_flops - recompute_flops
    compile_s = None
    if compiled:
        compile_layers(model)
        sync(plan)
        begin = time.perf_counter()
        step()  # compiles forward and backward
        sync(plan)
        compile_s = time.perf_counter() - begin
    for _ in range(plan.warmup):
        step()
    times = []
    for _ in range(plan.steps):
        sync(plan)
        begin = time.perf_counter()
        step()
        sync(plan)
        times.append(time.perf_counter() - begin)
    step_s = statistics.median(times)
    tokens = plan.micro_batch * plan.seq
    out = {"layers": layers, "checkpointing": checkpointing, "compiled": compiled, "compile_s": compile_s,
           "parameters_b": sum(p.numel() for p in params) / 1e9, "micro_batch": plan.micro_batch,
           "seq_len": plan.seq, "image_px": plan.image, "step_s": step_s, "step_times_s": times,
           "tokens_per_s": tokens / step_s, "images_per_s": plan.micro_batch / step_s,
           "model_tflop_per_step": model_flops / 1e12, "hardware_tflop_per_step": hardware_flops / 1e12,
           "achieved_model_tflops": model_flops / step_s / 1e12}
    if plan.device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        peak = spec_peak_bf16(torch.cuda.get_device_name())
        if peak:
            out["mfu_vs_spec"] = model_flops / step_s / peak
            out["hfu_vs_spec"] = hardware_flops / step_s / peak
    return out


def section_train(plan: Plan, deadline: float, forced_layers: int | None, checkpointing: bool = True,
                  compiled: bool = False) -> dict:
    total = torch.cuda.get_device_properties(0).total_memory if plan.device == "cuda" else 8e9
    estimate = estimate_layers(plan, total, checkpointing)
    if forced_layers:
        candidates = [forced_layers]
    elif plan.smoke:
        candidates = [plan.llm["num_hidden_layers"]]
    else:
        candidates = sorted({estimate, max(2, estimate * 3 // 4), max(2, estimate // 2), min(8, estimate)},
                            reverse=True)
    out = {"estimated_layers": estimate, "device_memory_gib": total / 2**30, "attempts": []}
    for layers in candidates:
        if time.time() > deadline - 90:
            out["attempts"].append({"layers": layers, "skipped": "not enough time left"})
            break
        result = None
        try:
            result = train_attempt(plan, layers, checkpointing, compiled)
        except torch.cuda.OutOfMemoryError as e:
            out["attempts"].append({"layers": layers, "error": f"out of memory: {str(e)[:300]}"})
        free_memory()
        if result is not None:
            out["attempts"].append({"layers": layers, "ok": True})
            out.update(result)
            break
    return out


def section_train_step(plan: Plan) -> dict:
    """The full step is never to be slower than the reference path: target speed-up 1."""
    sizes = dict(batch=2, image_size=56, width=32, llm_width=64, layers=4, vocab=512, teacher_width=16,
                 prompt_tokens=4, question_tokens=4, answer_tokens=4) if plan.smoke else \
        dict(batch=2, image_size=672, width=1024, llm_width=4096, layers=8, vocab=32000, teacher_width=1024,
             prompt_tokens=16, question_tokens=32, answer_tokens=64)
    return versus_reference(plan, "bench.train_step", sizes, 1.0)


def section_inference(plan: Plan) -> dict:
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = build_eve(plan, plan.llm["num_hidden_layers"]).eval()
    out = {"layers": plan.llm["num_hidden_layers"], "image_px": plan.image, "new_tokens": plan.new_tokens}
    repeats = 2 if plan.smoke else 3
    for batch in (1, plan.big_batch):
        ids, _ = prompt_ids(plan, batch)
        pixels = torch.randn(batch, 3, plan.image, plan.image, device=plan.device, dtype=plan.dtype)

        def generate(new_tokens: int, ids=ids, pixels=pixels) -> None:
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

        with torch.inference_mode():
            generate(1 + plan.new_tokens)  # warmup
            first, full = [], []
            for _ in range(repeats):
                for new_tokens, times in ((1, first), (1 + plan.new_tokens, full)):
                    sync(plan)
                    begin = time.perf_counter()
                    generate(new_tokens)
                    sync(plan)
                    times.append(time.perf_counter() - begin)
        ttft, total = statistics.median(first), statistics.median(full)
        out[f"batch_{batch}"] = {"prompt_tokens": ids.shape[1], "ttft_ms": ttft * 1e3,
                                 "decode_tokens_per_s": batch * plan.new_tokens / max(total - ttft, 1e-9),
                                 "decode_ms_per_step": (total - ttft) / plan.new_tokens * 1e3}
    if plan.device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


# --- driver ----------------------------------------------------------------------------------------------
def output_path(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    return Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else ROOT / "runs" / "bench" / "gpu.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu.py", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: proves every section runs")
    parser.add_argument("--budget", type=float, default=440.0, help="seconds from start-up for everything")
    parser.add_argument("--layers", type=int, default=None, help="train with this many decoder layers (no search)")
    parser.add_argument("--sections", default="device,train_nockpt,train_compiled,train_step,vision_train,"
                                               "vision_profile,inference,train",
                        help="comma-separated sections to run, in order")
    parser.add_argument("--output", default=None, help="JSON path (default: $OUT/gpu.json or runs/bench/gpu.json)")
    args = parser.parse_args(argv)
    plan = Plan(args.smoke)
    if plan.device == "cpu":
        torch.set_num_threads(1)  # tiny ops: one thread is fastest, and safe on a shared machine
    deadline = START + args.budget
    output = output_path(args)
    results: dict = {"command": " ".join(sys.argv), "smoke": args.smoke, "budget_s": args.budget}

    def save() -> None:
        results["elapsed_s"] = round(time.time() - START, 1)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def on_alarm(signum, frame):
        raise GuardTimeout(f"global time guard: {args.budget:.0f} s budget spent")

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(max(1, int(deadline - time.time())))
    faulthandler.dump_traceback_later(max(1.0, deadline + 40 - time.time()), exit=True)
    needs = {"device": 20, "vision_train": 40, "vision_profile": 60, "train_step": 40, "train_nockpt": 150, "train_compiled": 180,
             "train": 150,
             "inference": 60}  # seconds a section needs
    if plan.smoke:
        needs = dict.fromkeys(needs, 0.0)
    sections = {"device": lambda: section_device(plan), "vision_train": lambda: section_vision_train(plan),
                "vision_profile": lambda: section_vision_profile(plan),
                "train_step": lambda: section_train_step(plan),
                "train_nockpt": lambda: section_train(plan, deadline, args.layers, checkpointing=False),
                "train_compiled": lambda: section_train(plan, deadline, args.layers, checkpointing=False,
                                                        compiled=True),
                "train": lambda: section_train(plan, deadline, args.layers),
                "inference": lambda: section_inference(plan)}
    for name in args.sections.split(","):
        left = deadline - time.time()
        if left < needs.get(name, 30):
            results[name] = {"skipped": f"only {left:.0f} s of the budget left"}
        else:
            begin = time.time()
            try:
                results[name] = sections[name]()
            except Exception as e:  # record (the guard's timeout too), free, go on
                results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
            results[name]["seconds"] = round(time.time() - begin, 1)
            free_memory()
        save()
        print(f"[{time.time() - START:6.1f} s] {name}: {json.dumps(results[name], default=str)[:1500]}", flush=True)
    if hasattr(signal, "SIGALRM"):
        signal.alarm(0)
    faulthandler.cancel_dump_traceback_later()
    summarize(results)
    save()
    print(f"wrote {output}")
    return 0


def summarize(results: dict) -> None:
    measured = results.get("device", {}).get("measured_matmul_bf16_tflops")
    for name in ("train_nockpt", "train_compiled", "train"):
        train = results.get(name, {})
        if "achieved_model_tflops" in train and measured:
            train["mfu_vs_measured_matmul"] = train["achieved_model_tflops"] / measured
        print(name, json.dumps({k: v for k, v in train.items() if k not in ("step_times_s",)}, default=str, indent=1))


if __name__ == "__main__":
    sys.exit(main())
