"""Run the tiny three-stage recipe's first stage under a distributed engine config (GPU machine).

    PYTHONPATH=src python bench/gpu_engines.py --config configs/accelerate/fsdp2.yaml

Needs no downloads: the teacher is a tiny random DINOv2 written to a temporary folder; the tokenizer
is the in-memory test tokenizer. Prints the loss lines and whether the export loads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="an accelerate config (configs/accelerate/*.yaml)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=120)
    args = parser.parse_args()
    from transformers import Dinov2Config, Dinov2Model

    work = Path(tempfile.mkdtemp(prefix="eve-engines-"))
    Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                             patch_size=14, image_size=56)).save_pretrained(work / "teacher")
    recipe = yaml.safe_load((REPO / "configs/tiny/stage1.yaml").read_text())
    recipe.update(output_dir=str(work / "run"), max_steps=8, checkpoint_every=4, log_every=1)
    recipe["teacher"] = {"path": str(work / "teacher"), "layer": -1, "image_size": 56}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.config,
               "--num_processes", str(args.processes), "-m", "eve_vlm.cli", "train", str(work / "recipe.yaml")]
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    metrics = work / "run" / "metrics.jsonl"
    losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()] if metrics.exists() else []
    export_ok = False
    if (work / "run" / "export" / "config.json").exists():
        sys.path.insert(0, str(REPO / "src"))
        from eve_vlm import EveForCausalLM

        export_ok = EveForCausalLM.from_pretrained(work / "run" / "export") is not None
    report = {"config": args.config, "returncode": result.returncode, "seconds": round(time.time() - start, 1),
              "losses": losses, "export_loads": export_ok,
              "errors": [line for line in result.stderr.splitlines() if "Error" in line][-8:],
              "stderr_tail": result.stderr[-1500:]}
    print(json.dumps(report, indent=2))
    out = os.environ.get("OUT")
    if out:
        name = Path(args.config).stem
        (Path(out) / f"engine-{name}.json").write_text(json.dumps(report, indent=2))
    return 0 if result.returncode == 0 and export_ok else 1


if __name__ == "__main__":
    sys.exit(main())
