"""The one training loop, on accelerate: one CPU process, DDP, FSDP2 or DeepSpeed, unchanged.

`train(recipe)` = `setup` (objects from the recipe) -> `fit` (steps, logs, checkpoints) -> `export`
(`save_pretrained` + processor, the aligner beside it; never the teacher).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from safetensors import SafetensorError
from torch.utils.data import DataLoader

from ..data.pipeline import SkipPolicy
from ..data.processor import EveProcessor
from .losses import AlignedEve
from .recipe import Recipe
from .setup import (
    ALIGNER_DIR,
    Schedule,
    apply_lora,
    build_aligner,
    build_batches,
    build_model,
    build_sources,
    compile_layers,
    freeze,
    lr_lambda,
    parameter_summary,
    plan_schedule,
)
from .teacher import TeacherCache, VisionTeacher

logger = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
EXPORT = "export"
STATE_FILE = "trainer_state.json"
CHECKPOINT_NAME = re.compile(r"step-\d+")  # anything else under checkpoints/ is unfinished (.tmp, .trash)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss; the last good checkpoint is kept."""


@dataclass
class Run:
    """Everything `fit` and `export` use, built once by `setup`."""

    recipe: Recipe
    accelerator: Accelerator
    stage: AlignedEve
    processor: EveProcessor
    teacher: VisionTeacher | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loader: DataLoader
    schedule: Schedule
    output_dir: Path
    step: int = 0
    skips: SkipPolicy = field(default_factory=SkipPolicy)
    """The data policy's counts (skipped, truncated, seen), kept by this process from the batches' reports."""
    teacher_cache: TeacherCache | None = None
    nonfinite_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    frozen_fp32: dict[str, torch.Tensor] = field(default_factory=dict)
    """The fp32 values of parameters stored in bf16 for this stage (`frozen_to_bf16`), for the export."""


def setup(recipe: Recipe, resume: bool = False) -> Run:
    output_dir = Path(recipe.output_dir)
    # cpu=True on a machine without CUDA makes torchrun / `accelerate launch` processes join one gloo group
    precision = resolve_precision(recipe.precision)
    _allow_new_precision(precision)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                              log_with="tensorboard" if _has_tensorboard() else None,
                              project_dir=str(output_dir))
    set_seed(recipe.seed)
    model, processor, aligner = build_model(recipe)
    teacher = VisionTeacher.from_spec(recipe.teacher) if recipe.aligning else None
    aligner = build_aligner(recipe, model, teacher, aligner) if teacher is not None else aligner
    apply_lora(recipe, model)
    groups = freeze(recipe, model, aligner if teacher is not None else None)
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if recipe.compile:
        compile_layers(model)
    if accelerator.is_main_process:
        logger.info("%s: %s; precision %s", recipe.name,
                    parameter_summary(model, aligner if teacher else None, teacher), accelerator.mixed_precision)
    sources, weights = build_sources(recipe)
    batches = build_batches(recipe, sources, weights, processor, teacher, accelerator.process_index,
                            accelerator.num_processes)
    schedule = plan_schedule(recipe, batches, accelerator.num_processes)
    batches.epochs = math.ceil(schedule.total_steps * schedule.accumulation * accelerator.num_processes
                               / batches.batches_per_epoch()) or 1
    # fused: one kernel over all parameters (the demo-size step 1.24x faster on 2 CPU cores: bench train
    # --optimizer, docs/benchmarks.md section 3);
    # sharded engines (FSDP's DTensors, DeepSpeed's own partitioning) keep the default implementation
    fused = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU,
                                             DistributedType.MULTI_GPU)
    optimizer = torch.optim.AdamW([{"params": params, "lr": recipe.optim.lr[name], "name": name}
                                   for name, params in groups.items()],
                                  betas=recipe.optim.betas, weight_decay=recipe.optim.weight_decay, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(schedule, recipe.optim.schedule, recipe.optim.min_lr_ratio))
    stage = AlignedEve(model, aligner if teacher is not None else None, recipe.align_weight, recipe.ce_average)
    frozen_fp32 = (frozen_to_bf16(stage) if precision == "bf16" and accelerator.device.type == "cpu"
                   and recipe.lora is None else {})
    if accelerator.distributed_type == DistributedType.DEEPSPEED:  # no dataloader is prepared: say the size
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = recipe.micro_batch
    accelerator.gradient_accumulation_steps = schedule.accumulation
    # the scheduler is stepped by the loop once per optimizer step (accelerate's wrapper would step it
    # once per process), and saved with the checkpoints
    stage, optimizer = accelerator.prepare(stage, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if teacher is not None:  # frozen and never saved: it runs in bf16 when the stage does
        teacher.to(accelerator.device, torch.bfloat16 if precision == "bf16" else None)
    run = Run(recipe, accelerator, stage, processor, teacher, optimizer, scheduler, None, schedule,  # type: ignore[arg-type]
              output_dir, skips=batches.skip_policy, frozen_fp32=frozen_fp32)
    if recipe.teacher_cache is not None and teacher is not None:
        run.teacher_cache = TeacherCache.for_teacher(recipe.teacher_cache, recipe.teacher)  # type: ignore[arg-type]
    if resume:
        _resume(run)
    batches.start = run.step * schedule.accumulation * accelerator.num_processes
    run.loader = DataLoader(batches, batch_size=None, num_workers=recipe.data.num_workers)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2, default=str))
    accelerator.init_trackers(recipe.name.replace(" ", "_"))
    return run


def fit(run: Run) -> None:
    """Optimizer steps until the schedule ends: accumulate, clip, step, log, checkpoint."""
    acc, recipe, schedule = run.accelerator, run.recipe, run.schedule
    progress = _progress(run)
    window = _Window()
    micro, step_bad = 0, False
    for batch in run.loader:
        if run.step >= schedule.total_steps:
            break
        run.skips.account(batch)  # here, not in a DataLoader worker: the counts and the ratio see every batch
        batch.pop("num_skipped")
        batch.pop("position")
        with acc.accumulate(run.stage):
            losses = _forward(run, batch)
            finite = _all_finite(acc, losses["loss"])
            if finite:
                acc.backward(losses["loss"])
                window.add(losses, batch)
            step_bad |= not finite
            micro += 1
            if micro % schedule.accumulation == 0:
                _optimizer_step(run, step_bad)
                step_bad = False
        if micro % schedule.accumulation == 0:
            run.step += 1
            progress.update(1)
            if run.step % recipe.log_every == 0 or run.step == schedule.total_steps:
                _log(run, window.summary(acc), progress)
            if run.step % recipe.checkpoint_every == 0 and run.step < schedule.total_steps:
                save_checkpoint(run)
    progress.close()
    if run.step < schedule.total_steps:
        raise RuntimeError(f"data ran out at step {run.step} of {schedule.total_steps}")


def _forward(run: Run, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    device = run.accelerator.device
    batch = {k: _to(v, device) for k, v in batch.items()}
    teacher_features = None
    if run.teacher is not None and "teacher_pixel_values" in batch:
        pixels, grids = batch["teacher_pixel_values"], batch["teacher_grids"]
        if run.teacher_cache is not None:  # features of images seen before come from disk
            teacher_features = run.teacher_cache(run.teacher, pixels, grids)
        else:
            teacher_features = run.teacher(pixels, grids)
    with run.accelerator.autocast():
        return run.stage(batch, teacher_features)


def _optimizer_step(run: Run, bad: bool) -> None:
    acc = run.accelerator
    if bad:  # a NaN/inf anywhere in the step: drop its gradients, keep the schedule moving
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        run.nonfinite_steps += 1
        logger.warning("step %d: non-finite loss, step skipped (%d in a row)", run.step + 1, run.nonfinite_steps)
        if run.nonfinite_steps >= run.recipe.max_nonfinite_steps:
            raise NonFiniteLossError(f"{run.nonfinite_steps} consecutive steps had a non-finite loss; stopping. "
                                     f"The last good checkpoint is kept in {run.output_dir / CHECKPOINTS}")
        return
    run.nonfinite_steps = 0
    if run.recipe.optim.max_grad_norm > 0:
        acc.clip_grad_norm_(run.stage.parameters(), run.recipe.optim.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)


def _all_finite(acc: Accelerator, loss: torch.Tensor) -> bool:
    flag = torch.isfinite(loss.detach()).float().reshape(1)
    if acc.num_processes > 1:
        flag = acc.reduce(flag, reduction="sum") / acc.num_processes
    return bool(flag.item() == 1.0)


class _Window:
    """Loss and throughput since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count, self.tokens, self.images, self.start = 0, 0, 0, time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.count += 1
        self.tokens += batch["num_tokens"]
        pixels = batch.get("pixel_values")
        self.images += 0 if pixels is None else len(pixels)

    def summary(self, acc: Accelerator) -> dict[str, float]:
        values = torch.tensor([*[self.sums.get(k, 0.0) for k in ("loss", "ce", "align")], self.count,
                               self.tokens, self.images], dtype=torch.float64, device=acc.device)
        if acc.num_processes > 1:
            values = acc.reduce(values, reduction="sum")
        loss, ce, align, count, tokens, images = values.tolist()
        seconds = time.perf_counter() - self.start
        out = {"loss": loss / max(count, 1), "ce": ce / max(count, 1), "tokens_per_s": tokens / seconds,
               "images_per_s": images / seconds}
        if align:
            out["align"] = align / max(count, 1)
        self.reset()
        return out


def _log(run: Run, metrics: dict[str, float], progress: Any) -> None:
    acc = run.accelerator
    counts = torch.tensor([run.skips.skipped, run.skips.truncated], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        counts = acc.reduce(counts, reduction="sum")
    skipped, truncated = (int(c) for c in counts.tolist())
    metrics = {"step": run.step, **metrics, "skipped_samples": skipped, "truncated_samples": truncated,
               "nonfinite_steps": run.nonfinite_steps}
    if run.teacher_cache is not None:
        metrics.update(run.teacher_cache.counters())
    for group in run.optimizer.param_groups:
        metrics[f"lr_{group.get('name', 'group')}"] = group["lr"]
    run.history.append(metrics)
    acc.log({k: v for k, v in metrics.items() if k != "step"}, step=run.step)
    if acc.is_main_process:
        with open(run.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        shown = {k: f"{metrics[k]:.4f}" for k in ("loss", "ce", "align") if k in metrics}
        shown["tok/s"] = f"{metrics['tokens_per_s']:.0f}"
        progress.set_postfix(shown, refresh=False)
        logger.info("step %d/%d %s", run.step, run.schedule.total_steps,
                    " ".join(f"{k}={v}" for k, v in shown.items()))


def _progress(run: Run) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=run.schedule.total_steps, initial=run.step, desc=run.recipe.name, unit="step",
                disable=not run.accelerator.is_main_process, dynamic_ncols=True)


# --- checkpoints -------------------------------------------------------------------------------------
WRITE_ERRORS = (OSError, SafetensorError)
"""What a failed write raises: safetensors reports a full disk as its own error ("Error while serializing:
I/O error: No space left on device (os error 28)"), not as an OSError."""


def _why(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def save_checkpoint(run: Run) -> Path:
    """Write aside (`step-N.tmp`), sync, mark complete (the state file), then rename.

    A crash at any point, a SIGKILL included, leaves the earlier checkpoints as they were and no
    half-written one that `complete_checkpoints` would take; a failed write (a full disk) raises an
    OSError that names the checkpoint kept.
    """
    acc = run.accelerator
    root = run.output_dir / CHECKPOINTS
    final = root / f"step-{run.step:08d}"
    tmp = root / f"step-{run.step:08d}.tmp"
    if acc.is_main_process:
        _remove_unfinished(root)
    acc.wait_for_everyone()
    try:
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {"step": run.step, "skipped_samples": run.skips.skipped, "data": run.skips.state_dict(),
                     "history": run.history}
            _sync_files(tmp)
            _write_synced(tmp / STATE_FILE, json.dumps(state))
    except WRITE_ERRORS as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = complete_checkpoints(root)
        raise OSError(getattr(e, "errno", None), f"could not write checkpoint {final} ({_why(e)}); "
                               + (f"the last complete checkpoint {kept[-1]} is intact" if kept else
                                  "there is no earlier checkpoint")) from e
    if acc.is_main_process:
        _replace_dir(tmp, final)
        _fsync_dir(root)
        for old in complete_checkpoints(root)[: -run.recipe.keep_checkpoints]:
            _discard(old)
        logger.info("checkpoint %s", final)
    acc.wait_for_everyone()
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoints whose write finished (renamed to `step-N`, with their state file)."""
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step-*") if CHECKPOINT_NAME.fullmatch(p.name) and (p / STATE_FILE).exists())


def _remove_unfinished(root: Path) -> None:
    """What a killed run left under checkpoints/: half-written `.tmp`, half-deleted `.trash` folders."""
    for path in root.glob("step-*"):
        if not CHECKPOINT_NAME.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)


def _discard(path: Path) -> None:
    """Rename first (atomic), then delete: a kill mid-delete never leaves a partial `step-N`."""
    trash = path.with_name(path.name + ".trash")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _replace_dir(new: Path, target: Path) -> None:
    """Put the folder `new` at `target`. An old `target` is renamed aside first and deleted last, so
    `target` is missing only between two renames, and never partial."""
    trash = target.with_name(target.name + ".trash")
    shutil.rmtree(trash, ignore_errors=True)
    if target.exists():
        os.replace(target, trash)
    os.replace(new, target)
    shutil.rmtree(trash, ignore_errors=True)


def _resume(run: Run) -> None:
    checkpoints = complete_checkpoints(run.output_dir / CHECKPOINTS)
    if not checkpoints:
        logger.info("no checkpoint in %s: starting from step 0", run.output_dir / CHECKPOINTS)
        return
    latest = checkpoints[-1]
    run.accelerator.load_state(str(latest))
    state = json.loads((latest / STATE_FILE).read_text())
    run.step, run.history = state["step"], state["history"]
    if "data" in state:
        run.skips.load_state_dict(state["data"])
    else:  # a checkpoint written before the data report existed
        run.skips.skipped = state["skipped_samples"]
    if run.accelerator.is_main_process:  # drop the lines logged after the checkpoint by the interrupted run
        _write_atomic(run.output_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in run.history))
    logger.info("resumed from %s (step %d)", latest, run.step)


def _sync_files(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _write_synced(tmp, text)
    os.replace(tmp, path)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- export ------------------------------------------------------------------------------------------
def export(run: Run) -> Path:
    """`save_pretrained` + processor into `<output_dir>/export`, the aligner in `export/aligner`."""
    acc = run.accelerator
    target = run.output_dir / EXPORT
    tmp = run.output_dir / (EXPORT + ".tmp")
    state = acc.get_state_dict(run.stage)  # gathers shards under FSDP / ZeRO-3
    state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}  # DTensors
    state.update(run.frozen_fp32)  # frozen weights leave as they came, not rounded to bf16
    stage: AlignedEve = acc.unwrap_model(run.stage)
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        model = stage.model
        model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        if run.recipe.lora is not None:  # merge the adapters: the export is a plain EVE
            model.language_model = model.language_model.merge_and_unload()
            model_state = None
        try:
            model.save_pretrained(tmp, state_dict=model_state)
            run.processor.save_pretrained(tmp)
            if stage.aligner is not None:
                aligner_state = {k[len("aligner."):]: v for k, v in state.items() if k.startswith("aligner.")}
                stage.aligner.save_pretrained(tmp / ALIGNER_DIR, state_dict=aligner_state)
            _sync_files(tmp)
        except WRITE_ERRORS as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(getattr(e, "errno", None), f"could not write the export {target} ({_why(e)}); "
                                   + ("the previous export is intact" if target.exists() else
                                      "the checkpoints are intact")) from e
        _replace_dir(tmp, target)
        write_loss_curve(run.output_dir)
        logger.info("exported %s", target)
    acc.wait_for_everyone()
    return target


def write_loss_curve(output_dir: Path) -> Path | None:
    """`loss.png` from `metrics.jsonl` (CE and alignment loss per step)."""
    metrics_file = output_dir / "metrics.jsonl"
    if not metrics_file.exists():
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no loss curve")
        return None
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("ce", "align"):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = output_dir / "loss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train(recipe: Recipe, resume: bool = False) -> Path:
    """Run one stage end to end; returns its export directory."""
    run = setup(recipe, resume)
    try:
        fit(run)
        return export(run)
    finally:
        write_data_report(run)
        run.accelerator.end_training()


def write_data_report(run: Run) -> list[Path]:
    """`skipped.jsonl` and `truncated.jsonl` in the output folder: one line per record (source, record,
    reason, how often); written at the end of a run, also one that stopped. Rank r > 0 adds `.rank{r}`."""
    suffix = "" if run.accelerator.is_main_process else f".rank{run.accelerator.process_index}"
    paths = []
    for outcome in ("skipped", "truncated"):
        path = run.output_dir / f"{outcome}{suffix}.jsonl"
        try:
            _write_atomic(path, "".join(json.dumps(r) + "\n" for r in run.skips.report(outcome)))
        except OSError as e:  # never hide the error that ended the run
            logger.error("could not write %s: %s", path, e)
        paths.append(path)
    if run.skips.skipped or run.skips.truncated:
        logger.warning("data: %d of %d samples skipped, %d truncated (see %s)", run.skips.skipped, run.skips.seen,
                       run.skips.truncated, paths[0])
    return paths


# --- helpers -----------------------------------------------------------------------------------------
def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
        return [v.to(device, non_blocking=True) for v in value]
    return value


def frozen_to_bf16(stage: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Store the stage's frozen floating-point parameters in bf16; return their fp32 values by name.

    For bf16 autocast on a CPU: autocast casts every weight to bf16 at every use and caches only the
    casts of trainable ones, so a frozen LLM (stage 1) was re-cast in each step. The frozen LLM then runs
    as a bf16 model does (its residual stream in bf16, as in bf16 inference). The fp32 values are kept
    (host memory: 1.5x the frozen part) so that the export writes them exactly as they came.

    Frozen LayerNorms and GroupNorms stay fp32: CPU autocast runs their ops in fp32 and refuses bf16
    parameters beside an fp32 input (a frozen aligner or PEL). They are a few vectors."""
    keep_fp32 = {id(p) for m in stage.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm))
                 for p in m.parameters(recurse=False)}
    originals: dict[str, torch.Tensor] = {}
    by_param: dict[torch.nn.Parameter, torch.Tensor] = {}
    for name, param in stage.named_parameters(remove_duplicate=False):  # tied weights under each name
        if not param.requires_grad and param.dtype == torch.float32 and id(param) not in keep_fp32:
            if param not in by_param:
                by_param[param] = param.detach().clone()
            originals[name] = by_param[param]
    for param in by_param:
        param.data = param.data.to(torch.bfloat16)
    return originals


def _allow_new_precision(precision: str) -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another precision;
    stages run in one process (`--recipe DIR`, the demo, a notebook) may each choose theirs. Only the
    accelerator's settings are dropped: the process group (PartialState) stays."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def resolve_precision(precision: str) -> str:
    """A recipe's precision as accelerate names it on this machine: "bf16", "fp16" or "no"."""
    if precision == "auto":
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        return "bf16" if cpu_has_native_bf16() else "no"
    return {"fp32": "no"}.get(precision, precision)


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16): there bf16 autocast runs
    matmuls ~2x faster than fp32 (`python -m bench train --precision bf16`, 2-core AMD EPYC); elsewhere it is emulated and slower."""
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True

