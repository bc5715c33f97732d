"""Interrupted training: SIGKILL at random moments (while a checkpoint is written too) loses nothing.

Each kill is followed by `eve-vlm train RECIPE --resume`; after every kill each complete
checkpoint loads and the last one never goes back; the final weights and the logged losses equal
those of a run that was never interrupted. A full disk while saving keeps the previous checkpoint
or export and says so.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import eve_vlm
from eve_vlm import EveForCausalLM
from eve_vlm.train.loop import CHECKPOINTS, STATE_FILE, complete_checkpoints, export, fit, setup, train
from eve_vlm.train.recipe import load_recipe

pytestmark = pytest.mark.timeout(600)
SRC = Path(eve_vlm.__file__).resolve().parents[1]
STEPS = 40  # 16 steps an epoch: resumes land in the first, second and third epochs
KILLS = 6
SEED = 20260611


def command(recipe: Path) -> list[str]:
    return [sys.executable, "-m", "eve_vlm.cli", "train", str(recipe), "--resume"]


def environment() -> dict[str, str]:
    # deterministic CPU math: one thread (torch's deterministic algorithms add nothing on one CPU thread)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(SRC),
            "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "TQDM_DISABLE": "1"}


def latest_step(root: Path) -> int:
    checkpoints = complete_checkpoints(root)
    return int(checkpoints[-1].name.split("-")[1]) if checkpoints else 0


def writing(root: Path) -> bool:
    """A checkpoint is being written: a `.tmp` folder with some of its files, and no state file yet."""
    try:
        return any(p.name.endswith(".tmp") and any(p.iterdir()) and not (p / STATE_FILE).exists()
                   for p in root.iterdir())
    except FileNotFoundError:  # renamed or removed while we looked
        return False


def wait_until(predicate, process: subprocess.Popen, timeout: float = 60.0, poll: float = 0.001) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll)
    return False


def unfinished(root: Path) -> set[tuple[str, int]]:
    """The `.tmp` folders now (name, inode): one that is new after a kill was cut mid-write."""
    return {(p.name, p.stat().st_ino) for p in root.glob("*.tmp")} if root.exists() else set()


def check_checkpoints(root: Path) -> list[int]:
    """Every complete checkpoint loads: weights, state; returns their steps."""
    steps = []
    for checkpoint in complete_checkpoints(root):
        state = json.loads((checkpoint / STATE_FILE).read_text())
        assert state["step"] == int(checkpoint.name.split("-")[1])
        weights = load_file(str(checkpoint / "model.safetensors"))
        assert weights and all(torch.isfinite(t).all() for t in weights.values())
        torch.load(checkpoint / "optimizer.bin", weights_only=False)
        steps.append(state["step"])
    return steps


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(write_recipe, tmp_path):
    straight = write_recipe("straight.yaml", max_steps=STEPS, checkpoint_every=1000)
    killed = write_recipe("killed.yaml", max_steps=STEPS, checkpoint_every=1, keep_checkpoints=2)
    done = subprocess.run(command(straight), env=environment(), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    rng = random.Random(SEED)
    moments = ["startup", "training", "checkpoint"] * 2
    rng.shuffle(moments)
    root = tmp_path / "killed" / CHECKPOINTS
    log = []
    for moment in moments[:KILLS]:
        before, leftovers = latest_step(root), unfinished(root)
        process = subprocess.Popen(command(killed), env=environment(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        try:
            if moment == "startup":  # during imports, model building or the first steps (at most 2)
                deadline = time.monotonic() + rng.uniform(0.2, 3.0)
                wait_until(lambda b=before, d=deadline: time.monotonic() > d or latest_step(root) > b + 1, process)
            else:  # after a random number of steps, in the middle of training or of a checkpoint write
                target = min(before + rng.randint(2, 8), STEPS - 6)  # never so late that the run could end first
                assert wait_until(lambda t=target: latest_step(root) >= t, process), process.stderr.read()[-3000:]
                if moment == "training":
                    time.sleep(rng.uniform(0.0, 0.05))
                else:
                    assert wait_until(lambda: writing(root), process), "no checkpoint write was caught"
            assert process.poll() is None, "the run ended before it could be killed; raise STEPS"
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
            process.stderr.close()
        mid_write = bool(unfinished(root) - leftovers)
        steps = check_checkpoints(root)
        assert latest_step(root) >= before  # never goes back
        log.append({"moment": moment, "resumed_from": before, "latest_after_kill": latest_step(root),
                    "left_mid_write": mid_write, "complete": steps})
    assert len(log) == KILLS and sum(entry["left_mid_write"] for entry in log) >= 1, log

    done = subprocess.run(command(killed), env=environment(), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [p for p in root.iterdir() if p.name.endswith((".tmp", ".trash"))]  # cleaned up
    a = load_file(str(tmp_path / "straight" / "export" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "export" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    losses = {}
    for name in ("straight", "killed"):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # each step logged once, none lost
        losses[name] = [r["loss"] for r in rows]
    assert losses["killed"] == losses["straight"]
    print(f"\nkills survived: {len(log)}; " + "; ".join(
        f"{e['moment']} (from step {e['resumed_from']} to {e['latest_after_kill']}"
        + (", mid-write" if e["left_mid_write"] else "") + ")" for e in log))


# --- a full disk ------------------------------------------------------------------------------------------
def disk_full_on(call: int, raises: str = "os"):
    """A stand-in for safetensors' save_file: the `call`-th write starts, then the disk is full (an
    OSError, or the SafetensorError that safetensors itself raises for it)."""
    calls = {"n": 0}
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    def save(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == call:
            Path(filename).write_bytes(b"\0" * 100)  # what a write cut short by ENOSPC leaves
            if raises == "safetensors":
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_file(tensors, filename, metadata=metadata)
    return save


@pytest.mark.parametrize("raises", ["os", "safetensors"])
def test_full_disk_while_checkpointing_keeps_the_last_checkpoint(write_recipe, monkeypatch, raises):
    import accelerate.utils.other

    path = write_recipe("full.yaml", max_steps=5, checkpoint_every=1, keep_checkpoints=2)
    monkeypatch.setattr(accelerate.utils.other, "safe_save_file", disk_full_on(3, raises))
    with pytest.raises(OSError, match=r"could not write checkpoint \S+step-00000003 \(.*No space left on device.*\); "
                                      r"the last complete checkpoint \S+step-00000002 is intact") as info:
        train(load_recipe(path))
    assert info.value.errno == (errno.ENOSPC if raises == "os" else None)
    root = Path(load_recipe(path).output_dir) / CHECKPOINTS
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001", "step-00000002"]  # no half-written step 3
    assert check_checkpoints(root) == [1, 2]
    monkeypatch.undo()  # space freed: the run resumes from step 2 and ends as an uninterrupted one
    resumed = load_file(str(train(load_recipe(path), resume=True) / "model.safetensors"))
    straight = load_file(str(train(load_recipe(write_recipe("straight.yaml", max_steps=5))) / "model.safetensors"))
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("raises", ["os", "safetensors"])
def test_full_disk_while_exporting_keeps_the_previous_export(write_recipe, monkeypatch, raises):
    import transformers.modeling_utils

    recipe = load_recipe(write_recipe("export.yaml", max_steps=2))
    run = setup(recipe)
    fit(run)
    target = export(run)
    before = load_file(str(target / "model.safetensors"))
    with torch.no_grad():  # the next export would differ
        next(run.accelerator.unwrap_model(run.stage).model.patch_embed.parameters()).add_(1.0)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_full_on(1, raises))
    with pytest.raises(OSError, match=r"could not write the export \S+export \(.*No space left on device.*\); "
                                      r"the previous export is intact"):
        export(run)
    after = load_file(str(target / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert EveForCausalLM.from_pretrained(target) is not None
    assert sorted(p.name for p in target.parent.iterdir() if p.name.startswith("export")) == ["export"]
