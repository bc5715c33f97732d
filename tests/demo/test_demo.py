"""The demo's whole pipeline on a tiny slice: the shipped recipes with a few steps, every artifact checked."""

import json
from pathlib import Path

import pytest
import yaml

from eve_vlm import EveForCausalLM, EveProcessor
from eve_vlm.demo.evaluate import token_f1
from eve_vlm.demo.run import REPO_CONFIGS, DemoOptions, run_demo, stage_overrides


def _slice_recipes(tmp_path: Path) -> Path:
    """The shipped demo recipes, shrunk: 2 steps of 4 samples each, small data limits."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    for path in sorted(REPO_CONFIGS.glob("stage*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        recipe.update(max_steps=2, global_batch=4, micro_batch=4, log_every=1, checkpoint_every=100)
        for source in recipe["data"]["sources"]:
            source["options"]["limit"] = 16
        (folder / path.name).write_text(yaml.safe_dump(recipe))
    return folder


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo")
    options = DemoOptions(output=tmp_path / "out", recipes=_slice_recipes(tmp_path), mnist_eval=6, twemoji_eval=4)
    return options, run_demo(options)


def test_demo_writes_every_artifact_and_they_load(demo_run):
    options, metrics = demo_run
    out = options.output
    for name in ("metrics.json", "report.md", "loss_curves.png", "heldout_answers.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mnist_n"] == 6 and saved["twemoji_n"] == 4
    assert 0 <= saved["mnist_accuracy"] <= 100 and 0 <= saved["twemoji_token_f1"] <= 100
    assert saved == metrics
    assert set(saved["precision"]) == set(saved["stage_seconds"]) and set(saved["precision"].values()) <= {"bf16", "no"}
    # evaluated in the precision the last stage trained in, and the report says so
    assert saved["eval_dtype"] == {"bf16": "bfloat16", "no": "float32"}[list(saved["precision"].values())[-1]]
    model = EveForCausalLM.from_pretrained(out / "final")
    processor = EveProcessor.from_pretrained(out / "final")
    assert processor.template == "chat" and model.config.projector_norm
    assert not (out / "final" / "aligner").exists()  # the inference model only
    report = (out / "report.md").read_text()
    assert "MNIST test digits" in report and "loss_curves.png" in report
    assert f"evaluated in {saved['eval_dtype']}" in report
    for stage in ("stage1", "stage2", "stage3"):
        assert (out / stage / "export" / "model.safetensors").exists()
        assert len((out / stage / "metrics.jsonl").read_text().splitlines()) == 2


def test_stage1_kept_the_llm_frozen(demo_run):
    from safetensors.torch import load_file

    from eve_vlm.assets import smollm2_path

    options, _ = demo_run
    original = load_file(str(smollm2_path() / "model.safetensors"))
    stage1 = load_file(str(options.output / "stage1" / "export" / "model.safetensors"))
    for name, tensor in original.items():
        assert (stage1["language_model." + name] == tensor).all(), name


def test_no_aligner_overrides_remove_the_teacher():
    overrides = stage_overrides(DemoOptions(aligner=False), 1, Path("prev"))
    assert "teacher=null" in overrides and "init_from=prev" in overrides and "align_weight=0" in overrides


def test_token_f1():
    assert token_f1("thumbs up", "thumbs up") == 1.0
    assert token_f1("thumbs down", "thumbs up") == pytest.approx(0.5)
    assert token_f1("", "cat") == 0.0


def test_mnist_captions_in_words_or_numerals():
    from eve_vlm.demo.data import MnistSource

    words = MnistSource(split="test", task="caption", limit=3, seed=1)
    numerals = MnistSource(split="test", task="caption", limit=3, seed=1, caption_digits="numeral")
    qa = MnistSource(split="test", task="qa", limit=3, seed=1)
    for i in range(3):
        answer = qa[i].messages[1]["content"]
        assert numerals[i].messages[1]["content"] == f"a handwritten digit {answer}"
        assert words[i].messages[1]["content"].split()[-1] not in "0123456789"
    with pytest.raises(ValueError, match="caption_digits"):
        MnistSource(caption_digits="roman")


def test_mnist_multi_turn_conversations_hold_the_same_digits_in_order():
    from eve_vlm.demo.data import DIGIT_QUESTION, MnistSource

    single = MnistSource(split="test", task="qa", limit=9, seed=1)
    turns = MnistSource(split="test", task="qa", limit=9, seed=1, turns=4)
    assert len(turns) == 2  # 9 digits -> two whole conversations of 4
    sample = turns[1]
    assert len(sample.images) == 4 and len(sample.messages) == 8
    for k in range(4):
        user, answer = sample.messages[2 * k], sample.messages[2 * k + 1]
        assert user["content"] == [{"type": "image"}, {"type": "text", "text": DIGIT_QUESTION}]
        assert answer == single[4 + k].messages[1]
        assert list(sample.images[k].getdata()) == list(single[4 + k].images[0].getdata())
    captions = MnistSource(split="test", task="caption", limit=9, seed=1, turns=3)[2]
    assert [m["content"] for m in captions.messages[1::2]] == \
        [MnistSource(split="test", task="caption", limit=9, seed=1)[i].messages[1]["content"] for i in (6, 7, 8)]
    with pytest.raises(ValueError, match="turns"):
        MnistSource(task="qa", turns=0)


def test_a_saved_model_is_re_evaluated_alone_in_either_dtype(demo_run, capsys):
    from eve_vlm.demo.evaluate import main

    options, metrics = demo_run
    dtype = metrics["eval_dtype"]
    assert main([str(options.output / "final"), "--mnist", "6", "--twemoji", "4", "--dtype", dtype]) == 0
    printed = capsys.readouterr().out
    # the same model, questions and dtype as the demo's own evaluation: the same scores
    assert (f"in {dtype}: MNIST exact {metrics['mnist_accuracy']:.1f}% of 6; Twemoji exact "
            f"{metrics['twemoji_exact_match']:.1f}%, token F1 {metrics['twemoji_token_f1']:.1f}% of 4") in printed
    other = "float32" if dtype != "float32" else "bfloat16"
    assert main([str(options.output / "final"), "--mnist", "3", "--twemoji", "0", "--dtype", other,
                 "--batch-size", "2"]) == 0
    assert f"in {other}: MNIST exact" in capsys.readouterr().out


def test_compare_prints_each_stage_s_losses_over_windows_of_steps(demo_run, capsys, tmp_path):
    from eve_vlm.demo.compare import main, window_means
    from eve_vlm.demo.report import read_metrics

    options, metrics = demo_run
    assert main([str(options.output), "--windows", "2", "1", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"MNIST exact {metrics['mnist_accuracy']:.1f}% of 6" in printed
    rows = read_metrics(options.output / "stage1")  # two log lines, one per step: a window each
    assert ("stage1 ce    over 2 windows of 2 steps: " + " / ".join(f"{r['ce']:.3f}" for r in rows)) in printed
    stage2 = read_metrics(options.output / "stage2")
    assert f"stage2 ce    over 1 windows of 2 steps: {(stage2[0]['ce'] + stage2[1]['ce']) / 2:.3f}" in printed
    assert "stage3 align over 2 windows" in printed  # the demo trains with the aligner

    assert window_means([{"step": s, "ce": float(s)} for s in (10, 20, 30, 40)], "ce", 2) == [15.0, 35.0]
    assert window_means([{"step": 10, "loss": 1.0}], "align", 2) == []
    with pytest.raises(ValueError, match="3 windows over 2 logged steps"):
        window_means(rows, "ce", 3)
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        main([str(tmp_path)])


def test_the_evaluation_dtype_follows_the_last_stage_unless_asked():
    from eve_vlm.demo.run import resolve_eval_dtype

    assert resolve_eval_dtype("auto", "bf16") == "bfloat16"
    assert resolve_eval_dtype("auto", "fp16") == "float16"
    assert resolve_eval_dtype("auto", "no") == "float32"
    assert resolve_eval_dtype("float32", "bf16") == "float32"


def test_twemoji_multi_turn_conversations_hold_the_same_emoji_in_order():
    from eve_vlm.demo.data import EMOJI_QUESTION, TwemojiSource

    single = TwemojiSource(split="heldout", task="qa", limit=7, seed=3)
    turns = TwemojiSource(split="heldout", task="qa", limit=7, seed=3, turns=3)
    assert len(turns) == 2  # 7 emoji -> two whole conversations of 3
    sample = turns[1]
    assert len(sample.images) == 3 and len(sample.messages) == 6
    for k in range(3):
        assert sample.messages[2 * k]["content"] == [{"type": "image"}, {"type": "text", "text": EMOJI_QUESTION}]
        assert sample.messages[2 * k + 1] == single[3 + k].messages[1]
        assert list(sample.images[k].getdata()) == list(single[3 + k].images[0].getdata())
    # the length estimate covers the conversation's names, so length grouping sees whole conversations
    assert turns.text_length(1) == sum(single.text_length(i) for i in (3, 4, 5))
    with pytest.raises(ValueError, match="twemoji turns"):
        TwemojiSource(task="qa", turns=0)


def test_a_multi_turn_conversation_trains_every_answer():
    from eve_vlm.demo.data import MnistSource
    from eve_vlm.testing import tiny_model_and_processor

    _, processor = tiny_model_and_processor()
    processor.template = "vicuna_v1"
    sample = MnistSource(split="test", task="qa", limit=3, seed=1, turns=3)[0]
    encoded = processor.encode_conversation(sample.messages, sample.images)
    labels = [t for t in encoded["labels"] if t != -100]
    answers = "".join(m["content"] for m in sample.messages[1::2])
    assert processor.tokenizer.decode(labels).replace("</s>", "").replace(" ", "") == answers


def test_digit_probes_run_in_every_context_and_bound_the_generated_accuracy(demo_run):
    from eve_vlm.demo.probe import CONTEXTS, digit_probe

    options, metrics = demo_run
    final = str(options.output / "final")
    # a generated answer that is exactly right starts with the right digit, which then out-scores the other nine
    assert digit_probe(final, "chat", n=6) >= metrics["mnist_accuracy"]
    for context in CONTEXTS:
        assert 0 <= digit_probe(str(options.output / "stage1" / "export"), context, n=4) <= 100
    with pytest.raises(ValueError, match="context"):
        digit_probe(final, "vicuna", n=4)


@pytest.mark.parametrize(("context", "answer"), [("plain", " three"), ("chat", "3"), ("chat-caption", " three")])
def test_digit_predictions_read_each_contexts_answer_token(demo_run, context, answer):
    """A stand-in model that always scores one token highest: the probe must read it as the digit 3."""
    from types import SimpleNamespace

    import torch

    from eve_vlm.demo.data import MnistSource
    from eve_vlm.demo.probe import digit_predictions

    options, _ = demo_run
    processor = EveProcessor.from_pretrained(options.output / "final")
    favourite = processor.tokenizer(answer, add_special_tokens=False).input_ids[0]
    prompts = []

    def model(input_ids, logits_to_keep, **_):
        prompts.append(input_ids)
        logits = torch.zeros(len(input_ids), 1, len(processor.tokenizer))
        logits[:, -1, favourite] = 1.0
        return SimpleNamespace(logits=logits)

    predicted, labels = digit_predictions(model, processor, context, n=7, batch_size=4)
    assert predicted.tolist() == [3] * 7 and len(prompts) == 2
    assert labels.tolist() == [int(MnistSource(split="test", task="qa", limit=7, seed=1)[i].messages[1]["content"])
                               for i in range(7)]


def test_the_linear_probe_learns_from_pixels_and_not_from_constants():
    import torch

    from eve_vlm.demo.probe import linear_probe, pixel_features

    assert linear_probe(pixel_features, n=100, n_train=400) > 60  # chance is 10%
    assert linear_probe(lambda images: torch.ones(len(images), 3), n=100, n_train=400) < 30


def test_the_linear_probe_reads_the_models_visual_tokens_and_the_teachers_features(demo_run, teacher_path):
    from eve_vlm.demo.data import MnistSource
    from eve_vlm.demo.probe import main, teacher_features, visual_token_features

    options, _ = demo_run
    images = [MnistSource(split="test", limit=3)[i].images[0] for i in range(3)]
    model = EveForCausalLM.from_pretrained(options.output / "final")
    tokens = model.num_image_tokens(56, 56)
    assert visual_token_features(str(options.output / "final"))(images).shape == (3, tokens, model.config.hidden_size)
    assert teacher_features(teacher_path, scale=2)(images).shape == (3, 4 * 16)  # 2x2 cells of the tiny teacher
    for both in ([str(options.output / "final"), "--teacher", teacher_path], ["--pixels", "--teacher", teacher_path], []):
        with pytest.raises(SystemExit):
            main(both)  # exactly one of a model, a teacher, the pixels
