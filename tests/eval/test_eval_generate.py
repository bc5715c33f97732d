"""`EveGenerator` (inference's `Generator` plus evaluation's batching and scoring): batched answers
equal one-by-one answers; stop strings; log-likelihoods by hand."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from eve_vlm.eval import EvalItem
from eve_vlm.eval.generate import EveGenerator, device_name, item_request, user_message
from eve_vlm.infer import GenerationRequest, SamplingParams, cut_at_stop
from eve_vlm.testing import tiny_model_and_processor


@pytest.fixture(scope="module")
def tiny() -> tuple:
    return tiny_model_and_processor()


def _image(width: int, height: int, seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


# mixed image sizes (so mixed visual-token counts) and prompt lengths; one item has two images
ITEMS = [
    EvalItem(1, [_image(60, 40, 1)], "What digit is this?"),
    EvalItem(
        2,
        [_image(120, 120, 2)],
        "Is it a cat on the mat, yes or no? Answer the question using a single word.",
    ),
    EvalItem(3, [_image(30, 90, 3), _image(50, 50, 4)], "Compare them."),
    EvalItem(4, [_image(112, 56, 5)], "What does this emoji show?"),
    EvalItem(5, [_image(40, 40, 6)], "the cat sat on the mat with a red ball and a blue box"),
]


def test_batched_answers_equal_one_by_one_answers(tiny: tuple) -> None:
    model, processor = tiny
    batched = EveGenerator(model, processor, batch_size=4).answer_fn(max_new_tokens=8)(ITEMS)
    alone = EveGenerator(model, processor, batch_size=1).answer_fn(max_new_tokens=8)
    assert batched == [alone([item])[0] for item in ITEMS]
    assert any(batched)  # the random model does say something


def test_batches_are_sorted_by_prompt_length(tiny: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    model, processor = tiny
    widths: list[int] = []
    original = model.generate
    monkeypatch.setattr(
        model, "generate", lambda **kw: widths.append(kw["input_ids"].shape[1]) or original(**kw)
    )
    EveGenerator(model, processor, batch_size=2).answer_fn(max_new_tokens=2)(ITEMS)
    assert widths == sorted(widths, reverse=True) and len(widths) == 3


def test_prompt_is_the_models_template_with_images_first(
    tiny: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, processor = tiny
    seen = []
    original = processor.encode
    monkeypatch.setattr(
        processor, "encode", lambda text, *args, **kw: seen.append(text) or original(text, *args, **kw)
    )
    EveGenerator(model, processor).answer_fn(max_new_tokens=1)(ITEMS[2:3])
    assert seen == [
        processor.apply_chat_template([user_message("Compare them.", 2)], add_generation_prompt=True)
    ]
    assert seen[0].endswith("USER: <image><image>\nCompare them. ASSISTANT:")  # vicuna_v1, as recorded


def test_stop_strings_end_the_answer(tiny: tuple) -> None:
    model, processor = tiny
    generator = EveGenerator(model, processor, batch_size=2)
    full = generator.generate([item_request(item, SamplingParams(max_new_tokens=12)) for item in ITEMS[:2]])
    stop = full[0][len(full[0]) // 2 : len(full[0]) // 2 + 2]
    params = SamplingParams(max_new_tokens=12, stop=(stop,))
    cut = generator.generate([item_request(item, params) for item in ITEMS[:2]])
    assert cut[0] == full[0][: full[0].index(stop)].strip()
    assert cut[1] == cut_at_stop(full[1], [stop])[0].strip()


def test_loglikelihood_equals_a_forward_pass_by_hand(tiny: tuple) -> None:
    model, processor = tiny
    requests = [item_request(item, SamplingParams()) for item in ITEMS[:3]]
    continuations = [" yes", " the cat sat", ""]
    scored = EveGenerator(model, processor, batch_size=2).loglikelihood(requests, continuations)

    for request, continuation, (log_prob, is_greedy) in zip(requests, continuations, scored):
        prompt = processor.apply_chat_template(request.messages, add_generation_prompt=True)
        context = processor(text=prompt, images=request.images)
        whole = processor(text=prompt + continuation, images=request.images)
        start = context["input_ids"].shape[1]
        with torch.no_grad():
            logits = model(**whole).logits[0]
        targets = whole["input_ids"][0, start:]
        log_probs = torch.log_softmax(logits[start - 1 : -1], dim=-1)
        assert log_prob == pytest.approx(log_probs.gather(-1, targets[:, None]).sum().item(), abs=1e-4)
        assert is_greedy == bool((log_probs.argmax(-1) == targets).all())
    assert scored[2] == (0.0, True) and scored[0][0] < 0


def test_greedy_continuation_is_greedy(tiny: tuple) -> None:
    model, processor = tiny
    request = GenerationRequest([user_message("What digit is this?", 1)], [ITEMS[0].images[0]])
    inputs = processor(
        text=processor.apply_chat_template(request.messages, add_generation_prompt=True),
        images=request.images,
    )
    next_token = model(**inputs).logits[0, -1].argmax().item()
    greedy = processor.tokenizer.decode([next_token])
    other = processor.tokenizer.decode([(next_token + 7) % 300 + 5])
    (_, first), (_, second) = EveGenerator(model, processor).loglikelihood(
        [request, request], [greedy, other]
    )
    assert first is True and second is False


def test_settings_are_validated(tiny: tuple) -> None:
    model, processor = tiny
    with pytest.raises(ValueError, match="max_new_tokens"):
        EveGenerator(model, processor).answer_fn(max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        EveGenerator(model, processor, batch_size=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    assert cut_at_stop("a\n\nb", ["\n\n", "zz"]) == ("a", True)


def test_a_distributed_processs_device_is_named_as_load_model_takes_it() -> None:
    assert device_name(torch.device("cpu", 0)) == "cpu"  # accelerate's CPU processes
    assert device_name(torch.device("cuda", 1)) == "cuda:1"


def test_a_prompt_near_the_end_of_the_context_gets_the_room_there_is(
    tiny: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, processor = tiny
    generator = EveGenerator(model, processor)
    prompt_tokens = generator.generator.prepare(item_request(ITEMS[0], SamplingParams())).prompt_tokens
    monkeypatch.setattr(generator.generator, "context_length", prompt_tokens + 3)
    rows: list[int] = []
    original = generator.generator.run
    monkeypatch.setattr(
        generator.generator,
        "run",
        lambda batch: rows.extend(p.params.max_new_tokens for p in batch) or original(batch),
    )
    generator.answer_fn(max_new_tokens=8)(ITEMS[:1])
    assert rows == [3]  # not refused: answered with the 3 tokens that fit
    monkeypatch.setattr(generator.generator, "context_length", prompt_tokens)
    with pytest.raises(ValueError, match="exceeds the model's context"):  # not even one token fits
        generator.answer_fn(max_new_tokens=8)(ITEMS[:1])
