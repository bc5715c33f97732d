"""The sizes the train/memory benchmarks share: real pipeline batches, padding, one training step."""

import torch
from bench.sizes import TrainStep, build, padding_fraction, take_batches


def test_padding_fraction_counts_padded_positions():
    batches = [{"attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])},
               {"attention_mask": torch.tensor([[1, 1], [1, 0]])}]
    assert padding_fraction(batches) == 3 / 12


def test_tiny_size_gives_pipeline_batches_that_train():
    built = build("tiny")
    batches = take_batches(built, 2)
    assert len(batches) == 2
    for batch in batches:
        assert batch["teacher_features"].shape == (batch["patch_positions"].shape[0], 16)
        assert batch["input_ids"].shape[0] == 8
    step = TrainStep(built)
    before = [p.detach().clone() for p in step.params]
    phases = step(batches[0])
    assert phases["step_s"] >= phases["forward_s"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, step.params))


def test_demo_size_is_read_from_configs_demo():
    import yaml
    from bench.sizes import DEMO_CONFIGS, demo_size

    model = yaml.safe_load((DEMO_CONFIGS / "stage1.yaml").read_text())["model"]
    stage = yaml.safe_load((DEMO_CONFIGS / "stage2.yaml").read_text())
    size = demo_size()
    assert size.text is None  # SmolLM2-135M-Instruct with its weights
    assert {k: v for k, v in size.eve.items() if k != "template"} == {k: v for k, v in model["eve"].items()
                                                                     if k != "template"}
    assert size.eve["template"] == stage["template"]
    assert (size.micro_batch, size.max_length) == (stage["micro_batch"], stage["data"]["max_length"])
    assert [kind for kind, _, _ in size.sources] == [s["kind"] for s in stage["data"]["sources"]]
    assert size.group_by_length == stage["data"].get("group_by_length", True)
