"""Training step throughput and model FLOPs utilisation (MFU) on this machine.

    python -m bench train                       # tiny, demo, mid (see bench/sizes.py)
    python -m bench train --sizes demo --repeats 5
    python -m bench train --smoke               # tiny only, seconds

Per size: micro-batches from our real length-grouped pipeline (`TrainBatches`), one optimizer step
of `AlignedEve` (CE + alignment loss; PEL, LLM and aligner all train; AdamW, fused unless --optimizer foreach;
fp32, or bf16 autocast with --precision bf16; grad clip), the
teacher replaced by random features of its shape. The FLOPs of each timed batch's forward+backward
are counted once with FlopCounterMode (in an untimed pass); MFU = counted FLOPs / step time / peak,
peak = the best fp32 (bf16 with --precision bf16) (4096^2) matmul FLOP/s measured in the same run (right before and after). The
padding fraction is measured over --padding-batches micro-batches of the same pipeline, with the
size's own length-grouping setting (`grouped`, the timed batches) and with grouping on and off. One step
of --profile-size is profiled (torch.profiler, self CPU time per op) to show where the time goes.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from .common import Recorder, base_parser, count_flops, matmul_peak
from .sizes import SIZES, TrainStep, build, padding_fraction, take_batches

COLUMNS = ("size", "params_m", "micro_batch", "seq_len", "grouped", "padding", "padding_grouped", "padding_ungrouped",
           "step_s", "tokens_s", "images_s", "gflop_step", "gflop_s", "peak_gflop_s", "mfu", "fwd_bwd_opt")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "aten::convolution",
              "aten::mkldnn_convolution", "aten::convolution_backward",
              "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def profile_step(step: TrainStep, batch: dict, top: int = 15) -> dict:
    """Self CPU time per op of one training step, and the share spent in matmul-like kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(batch)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    return {"total_ms": total / 1e3, "matmul_share": matmul / total,
            "top_ops": [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
                         "calls": e.count} for e in events[:top]]}


def run(args) -> dict:
    rec = Recorder("train", args)
    names = ["tiny"] if args.smoke else args.sizes
    peak_size = 512 if args.smoke else 4096
    peak_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    rows, flops_per_s, profiles, peaks = {}, {}, {}, {}
    for name in names:
        built = build(name)
        batches = take_batches(built, max(args.padding_batches, args.repeats))
        timed = batches[: args.repeats]
        other = take_batches(built, args.padding_batches, built.pipeline(not built.size.group_by_length))
        padding = {built.size.group_by_length: padding_fraction(batches), not built.size.group_by_length:
                   padding_fraction(other)}
        step = TrainStep(built, bf16=args.precision == "bf16", fused=args.optimizer == "fused")
        for _ in range(args.warmup):
            step(timed[0])
        flops = []
        for batch in timed:  # counted once per batch, untimed
            flops.append(count_flops(lambda b=batch, s=step: s.forward_backward(b)))
            step.zero_grad()
        before = matmul_peak(peak_size, dtype=peak_dtype)  # the peak right before and after this size's steps
        phases = [step(batch) for batch in timed]
        peaks[name] = (before, matmul_peak(peak_size, dtype=peak_dtype))
        seconds = sum(p["step_s"] for p in phases)
        tokens = sum(b["num_tokens"] for b in timed)
        images = sum(len(b["pixel_values"]) for b in timed)
        flops_per_s[name] = sum(flops) / seconds
        fwd, bwd, opt = (sum(p[k] for p in phases) / seconds for k in ("forward_s", "backward_s", "optimizer_s"))
        rows[name] = rec.row(size=name, params_m=built.parameters() / 1e6, micro_batch=built.size.micro_batch,
                             seq_len=statistics.mean(b["input_ids"].shape[1] for b in timed),
                             grouped=built.size.group_by_length, padding=padding[built.size.group_by_length],
                             padding_grouped=padding[True], padding_ungrouped=padding[False],
                             step_s=statistics.median(p["step_s"] for p in phases), tokens_s=tokens / seconds,
                             images_s=images / seconds, gflop_step=statistics.mean(flops) / 1e9,
                             gflop_s=flops_per_s[name] / 1e9, fwd_bwd_opt=f"{fwd:.2f}/{bwd:.2f}/{opt:.2f}",
                             step_times_s=[p["step_s"] for p in phases])
        if name == args.profile_size or args.smoke:
            profiles[name] = profile_step(step, timed[0])
        del built, step
    for name, row in rows.items():
        row["peak_gflop_s"] = max(peaks[name]) / 1e9
        row["mfu"] = flops_per_s[name] / max(peaks[name])
    if "demo" in rows:
        mfu = rows["demo"]["mfu"]
        why = "" if mfu >= 0.35 else "see the profile: time outside large matmuls"
        rec.target("CPU training MFU at the demo config", mfu, 0.35, mfu >= 0.35, why)
    rec.note(f"peak_gflop_s = the better of two best-of-5 {args.precision} {peak_size}^2 matmuls measured right before and after "
             "the size's timed steps (same threads). FLOPs counted include the padded positions (the work done).")
    rec.note("fwd_bwd_opt = share of step time in forward / backward / clip+AdamW+zero_grad.")
    for name, prof in profiles.items():
        top = ", ".join(f"{o['op']} {o['share']:.0%}" for o in prof["top_ops"][:6])
        rec.note(f"profile {name}: matmul-like kernels {prof['matmul_share']:.0%} of self CPU time; top: {top}")
    return rec.finish(args.output, COLUMNS, {"peak_flop_s": peaks, "profiles": profiles})


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("train", __doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: s.split(","), default=["tiny", "demo", "mid"],
                        help=f"comma-separated sizes among {', '.join(SIZES)}")
    parser.add_argument("--padding-batches", type=int, default=32,
                        help="micro-batches over which the padding fraction is measured")
    parser.add_argument("--profile-size", default="demo", help="the size whose step is profiled")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: forward under bf16 autocast, MFU against the bf16 matmul peak")
    parser.add_argument("--optimizer", choices=("fused", "foreach"), default="fused",
                        help="AdamW implementation: fused (the training loop's) or torch's default foreach")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step allocates the optimizer state)")
    torch.manual_seed(0)
    run(args)
    return 0
