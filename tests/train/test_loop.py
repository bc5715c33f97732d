"""The training loop: declared parameters train, frozen ones do not, resume is exact, ranks agree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eve_vlm import EveForCausalLM
from eve_vlm.model.aligner import PatchAligner
from eve_vlm.train import loop
from eve_vlm.train.loop import complete_checkpoints, export, fit, setup, train
from eve_vlm.train.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def _losses(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def _weights(export_dir):
    return load_file(str(Path(export_dir) / "model.safetensors"))


def test_stage1_trains_only_pel_and_aligner(write_recipe):
    recipe = load_recipe(write_recipe(max_steps=3))
    run = setup(recipe)
    stage = run.accelerator.unwrap_model(run.stage)
    before = {k: v.clone() for k, v in stage.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in run.teacher.state_dict().items()}
    fit(run)
    after = stage.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("model.language_model.") for k in changed)
    assert any(k.startswith("model.patch_embed.") for k in changed)
    assert any(k.startswith("model.projector.") for k in changed)
    assert any(k.startswith("aligner.") for k in changed)
    assert all(torch.equal(v, run.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert not run.teacher.training


def test_auto_precision_is_bf16_only_where_the_hardware_multiplies_bf16(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert loop.cpu_has_native_bf16.__wrapped__(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert not loop.cpu_has_native_bf16.__wrapped__(cpuinfo)
    cpuinfo.write_text("flags\t\t: amx_tile amx_bf16\n")
    assert loop.cpu_has_native_bf16.__wrapped__(cpuinfo)
    assert not loop.cpu_has_native_bf16.__wrapped__(tmp_path / "missing")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expected in [(True, "bf16"), (False, "no")]:
        monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda native=native: native)
        assert loop.resolve_precision("auto") == expected
        assert loop.resolve_precision("fp32") == "no" and loop.resolve_precision("bf16") == "bf16"


def test_bf16_stage_trains_fp32_master_weights(write_recipe):
    assert setup(load_recipe(write_recipe("fp32.yaml", max_steps=4))).accelerator.mixed_precision == "no"
    run = setup(load_recipe(write_recipe(max_steps=4, precision="bf16")))  # a second precision, same process
    assert run.accelerator.mixed_precision == "bf16"
    stage = run.accelerator.unwrap_model(run.stage)
    before = {k: v.clone() for k, v in stage.state_dict().items() if k.startswith("model.patch_embed.")}
    fit(run)
    after = stage.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.isfinite(after[k]).all() for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    losses = [r["loss"] for r in _losses(run.output_dir)]
    assert len(losses) == 4 and all(0 < loss < 100 for loss in losses)


@pytest.mark.parametrize("tied", [False, True])
def test_a_frozen_llm_is_stored_in_bf16_on_cpu_and_exported_in_fp32(write_recipe, tied):
    fp32 = train(load_recipe(write_recipe("fp32.yaml", max_steps=2, model__text_config__tie_word_embeddings=tied)))
    run = setup(load_recipe(write_recipe("bf16.yaml", max_steps=2, precision="bf16",
                                         model__text_config__tie_word_embeddings=tied)))
    stage = run.accelerator.unwrap_model(run.stage)
    assert {p.dtype for p in stage.model.language_model.parameters()} == {torch.bfloat16}  # frozen in stage 1
    assert {p.dtype for p in stage.model.patch_embed.parameters()} == {torch.float32}  # trained: fp32 masters
    fit(run)
    exported, reference = _weights(export(run)), _weights(fp32)
    llm = [k for k in reference if k.startswith("language_model.")]
    assert llm and all(exported[k].dtype == torch.float32 and torch.equal(exported[k], reference[k]) for k in llm)
    model = EveForCausalLM.from_pretrained(run.output_dir / "export")
    assert model.get_output_embeddings().weight.dtype == torch.float32
    if tied:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_a_bf16_stage_on_cpu_runs_with_the_pel_and_aligner_frozen(write_recipe):
    # frozen LayerNorms (the aligner's, the projector's) stay fp32: CPU autocast runs layer_norm in fp32
    # and refuses bf16 parameters beside an fp32 input
    recipe = load_recipe(write_recipe(max_steps=2, precision="bf16", model__eve__projector_norm=True,
                                      optim__lr={"llm": 1e-3, "pel": 0.0, "aligner": 0.0}))
    run = setup(recipe)
    stage = run.accelerator.unwrap_model(run.stage)
    norms = [m for m in stage.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    assert {p.dtype for p in stage.aligner.layer_proj[0][1].parameters()} == {torch.bfloat16}  # frozen matrix
    fit(run)
    losses = [r["loss"] for r in _losses(run.output_dir)]
    assert len(losses) == 2 and all(0 < loss < 100 for loss in losses)


def test_export_holds_no_teacher_and_keeps_the_aligner_beside_it(write_recipe):
    recipe = load_recipe(write_recipe(max_steps=2))
    out = train(recipe)
    names = _weights(out).keys()
    assert not any("aligner" in n or "teacher" in n or "encoder" in n for n in names)
    model = EveForCausalLM.from_pretrained(out)
    assert model.config.template == "plain"
    aligner = PatchAligner.from_pretrained(out / "aligner")
    assert aligner.layers == [4, 0]
    assert (Path(recipe.output_dir) / "loss.png").exists()


def test_next_stage_initialises_from_the_export_and_trains_everything(write_recipe):
    first = train(load_recipe(write_recipe("s1.yaml", max_steps=2)))
    recipe = load_recipe(write_recipe("s2.yaml", max_steps=2, init_from=str(first), model=None,
                                      template="vicuna_v1",
                                      optim__lr={"pel": 1e-3, "aligner": 1e-3, "llm": 1e-3},
                                      data={"sources": [{"kind": "shapes", "options": {"size": 16, "task": "qa"}}],
                                            "max_length": 160}))
    run = setup(recipe)
    stage = run.accelerator.unwrap_model(run.stage)
    start = {k: v.clone() for k, v in stage.state_dict().items()}
    exported = _weights(first)
    for name, tensor in exported.items():
        assert torch.equal(start["model." + name], tensor), name
    fit(run)
    changed = {k for k, v in stage.state_dict().items() if not torch.equal(v, start[k])}
    assert any(k.startswith("model.language_model.") for k in changed)
    assert run.processor.template == "vicuna_v1"


def test_interrupted_and_resumed_run_equals_the_uninterrupted_run(write_recipe, monkeypatch):
    straight = train(load_recipe(write_recipe("a.yaml")))
    path = write_recipe("b.yaml")
    original = loop.save_checkpoint

    def crash_after_checkpoint(run):
        original(run)
        raise KeyboardInterrupt  # as if killed right after the step-3 checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(load_recipe(path))
    monkeypatch.setattr(loop, "save_checkpoint", original)
    out_b = Path(load_recipe(path).output_dir)
    assert [p.name for p in complete_checkpoints(out_b / "checkpoints")] == ["step-00000003"]
    resumed = train(load_recipe(path), resume=True)
    a, b = _weights(straight), _weights(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    losses_a = [r["loss"] for r in _losses(straight.parent)]
    losses_b = [r["loss"] for r in _losses(out_b)]
    assert losses_b == pytest.approx(losses_a, abs=1e-5)


def test_half_written_checkpoint_is_ignored(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step-00000004.tmp").mkdir(parents=True)
    (root / "step-00000002").mkdir()
    (root / "step-00000002" / "trainer_state.json").write_text("{}")
    (root / "step-00000006").mkdir()  # renamed but without its state file: not complete
    assert [p.name for p in complete_checkpoints(root)] == ["step-00000002"]


def test_two_processes_give_the_same_losses_as_one(write_recipe, tmp_path):
    one = write_recipe("one.yaml", max_steps=3, checkpoint_every=100)
    two = write_recipe("two.yaml", max_steps=3, checkpoint_every=100)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-m", "eve_vlm.cli", "train", str(one)], check=True, env=env, cwd=tmp_path,
                   capture_output=True)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "eve_vlm.cli", "train", str(two)],
                            env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    a = [r["loss"] for r in _losses(tmp_path / "one")]
    b = [r["loss"] for r in _losses(tmp_path / "two")]
    assert len(a) == 3 and b == pytest.approx(a, rel=1e-4)
    wa, wb = _weights(tmp_path / "one" / "export"), _weights(tmp_path / "two" / "export")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)


def test_nonfinite_losses_are_skipped_counted_and_stop_the_run(write_recipe, monkeypatch):
    recipe = load_recipe(write_recipe(max_steps=6, max_nonfinite_steps=2, checkpoint_every=1))
    calls = {"n": 0}
    real_forward = loop._forward

    def sometimes_nan(run, batch):
        calls["n"] += 1
        out = real_forward(run, batch)
        if calls["n"] > 4:  # steps 1-2 fine (2 micro-batches each), then NaN forever
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(loop, "_forward", sometimes_nan)
    run = setup(recipe)
    with pytest.raises(loop.NonFiniteLossError, match="2 consecutive steps"):
        fit(run)
    assert run.nonfinite_steps == 2
    good = complete_checkpoints(Path(recipe.output_dir) / "checkpoints")
    assert good[-1].name == "step-00000003"  # the first bad step was skipped and still checkpointed
    export(run)
    for name, tensor in _weights(Path(recipe.output_dir) / "export").items():
        assert torch.isfinite(tensor).all(), name


def test_answer_only_loss_equals_the_models_own_loss():
    from eve_vlm.testing import tiny_model_and_processor
    from eve_vlm.train.losses import AlignedEve

    model, processor = tiny_model_and_processor()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit?"}]},
                {"role": "assistant", "content": "seven"}]
    from PIL import Image

    samples = [processor.encode_conversation(messages, [Image.new("RGB", (56 + 28 * i, 56))]) for i in range(2)]
    batch = processor.collate(samples)
    ours = AlignedEve(model)(batch)["ce"]
    reference = model(**batch).loss
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_sample_average_ce_is_the_mean_of_each_samples_own_loss():
    from PIL import Image

    from eve_vlm.testing import tiny_model_and_processor
    from eve_vlm.train.losses import AlignedEve

    model, processor = tiny_model_and_processor()
    answers = ["seven", "a much longer answer with many more tokens than the first one"]
    samples = [processor.encode_conversation(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
         {"role": "assistant", "content": answer}], [Image.new("RGB", (56, 56))]) for answer in answers]
    alone = [model(**processor.collate([sample])).loss for sample in samples]
    batch = processor.collate(samples)
    per_sample = AlignedEve(model, ce_average="sample")(batch)["ce"]
    torch.testing.assert_close(per_sample, torch.stack(alone).mean(), rtol=1e-5, atol=1e-6)
    per_token = AlignedEve(model)(batch)["ce"]  # the long answer weighs more
    assert abs(float(per_token - per_sample)) > 1e-4


def test_ce_average_is_validated(write_recipe):
    from eve_vlm.train.recipe import RecipeError

    with pytest.raises(RecipeError, match="ce_average='mean'"):
        load_recipe(write_recipe(ce_average="mean"))
    assert load_recipe(write_recipe(ce_average="sample")).ce_average == "sample"


def test_lora_trains_only_adapters_and_exports_a_merged_model(write_recipe):
    first = train(load_recipe(write_recipe("s1.yaml", max_steps=2)))
    recipe = load_recipe(write_recipe("lora.yaml", max_steps=2, init_from=str(first), model=None,
                                      optim__lr={"pel": 1e-3, "llm": 1e-2}, teacher=None, align_weight=0,
                                      lora={"r": 4, "alpha": 8, "dropout": 0.0,
                                            "target_modules": ["q_proj", "v_proj"]}))
    run = setup(recipe)
    stage = run.accelerator.unwrap_model(run.stage)
    trainable = {n for n, p in stage.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("model.patch_embed") or n.startswith("model.projector")
                             for n in trainable)
    assert any("lora_" in n for n in trainable)
    fit(run)
    out = export(run)
    merged = _weights(out)
    assert not any("lora" in n for n in merged)
    before = _weights(first)
    changed = [n for n in merged if n.startswith("language_model.") and not torch.equal(merged[n], before[n])]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)  # LoRA merged into q/v only
    EveForCausalLM.from_pretrained(out)


def test_compiled_layers_train_like_eager_ones_and_export_the_same_names(write_recipe):
    lr = {"pel": 1e-2, "aligner": 1e-2, "llm": 1e-3}
    eager = train(load_recipe(write_recipe("eager.yaml", max_steps=3, optim__lr=lr)))
    run = setup(load_recipe(write_recipe("compiled.yaml", max_steps=3, optim__lr=lr, compile=True)))
    layers = run.accelerator.unwrap_model(run.stage).model.get_decoder().layers
    assert len(layers) == 4 and all(layer._compiled_call_impl is not None for layer in layers)
    fit(run)
    compiled = export(run)
    ours, theirs = ([r["loss"] for r in _losses(path.parent)] for path in (compiled, eager))
    assert len(ours) == 3 and ours == pytest.approx(theirs, rel=1e-4)
    compiled_weights, eager_weights = _weights(compiled), _weights(eager)
    assert compiled_weights.keys() == eager_weights.keys()
    assert all(torch.allclose(tensor, eager_weights[name], atol=1e-5) for name, tensor in compiled_weights.items())
