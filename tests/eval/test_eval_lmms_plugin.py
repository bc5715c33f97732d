"""The lmms-eval plugin (`eve_vlm.eval.lmms_plugin`) on lmms-eval's request shapes.

lmms-eval is not a dependency (nor installed in the project's environment), so the plugin is
imported against a thin stand-in of the parts it touches: `lmms_eval.api.model.lmms` (rank,
world_size, task_dict, cache_hook), `lmms_eval.api.instance.Instance`, `register_model` and
`ModelManifest`, shaped after lmms-eval's own code. The plugin's logic runs for real on a tiny
model and is checked against `EveGenerator`, the path `eve-vlm eval` takes. Only the run against
a real lmms-eval install is skipped when it is absent.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import eve_vlm.eval
from eve_vlm.eval import EvalItem
from eve_vlm.eval.generate import EveGenerator, user_message
from eve_vlm.infer import GenerationRequest, SamplingParams, load_model
from eve_vlm.testing import tiny_model_and_processor

PLUGIN = "eve_vlm.eval.lmms_plugin"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
REAL_LMMS_REASON = (
    "lmms-eval is not installed (optional; the plugin's logic is tested against a stand-in above)"
)


# ------------------------------------------------------------------------------ lmms-eval stand-in


class FakeLmms:
    """`lmms_eval.api.model.lmms`: single process by default, a cache hook, a task_dict set later."""

    is_simple = True

    def __init__(self) -> None:
        self._rank = 0
        self._world_size = 1
        self.task_dict: dict[str, Any] = {}
        self.cached: list[tuple] = []
        self.cache_hook = types.SimpleNamespace(add_partial=lambda *args: self.cached.append(args))

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size


@dataclass
class FakeInstance:
    """`lmms_eval.api.instance.Instance`: `args` is the arguments tuple."""

    request_type: str
    arguments: tuple
    idx: int = 0
    metadata: dict = field(default_factory=dict)

    @property
    def args(self) -> tuple:
        return self.arguments


@dataclass(frozen=True)
class FakeModelManifest:
    model_id: str
    simple_class_path: str | None = None
    chat_class_path: str | None = None
    aliases: tuple[str, ...] = ()


def fake_lmms_eval(registered: dict[str, type]) -> dict[str, types.ModuleType]:
    def register_model(*names: str) -> Any:
        def decorate(cls: type) -> type:
            assert issubclass(cls, FakeLmms)
            registered.update(dict.fromkeys(names, cls))
            return cls

        return decorate

    attributes = {
        "lmms_eval": {},
        "lmms_eval.api": {},
        "lmms_eval.api.model": {"lmms": FakeLmms},
        "lmms_eval.api.instance": {"Instance": FakeInstance},
        "lmms_eval.api.registry": {"register_model": register_model},
        "lmms_eval.models": {},
        "lmms_eval.models.registry_v2": {"ModelManifest": FakeModelManifest},
    }
    modules = {name: types.ModuleType(name) for name in attributes}
    for name, module in modules.items():
        module.__dict__.update(attributes[name])
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    return modules


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, type]]:
    """Import the plugin against the stand-in; yields what it registered with `register_model`."""
    found: dict[str, type] = {}
    for name, module in fake_lmms_eval(found).items():
        monkeypatch.setitem(sys.modules, name, module)
    sys.modules.pop(PLUGIN, None)
    importlib.import_module(PLUGIN)
    yield found
    sys.modules.pop(PLUGIN, None)  # later imports (a real lmms-eval) start afresh
    if hasattr(eve_vlm.eval, "lmms_plugin"):
        delattr(eve_vlm.eval, "lmms_plugin")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def plugin(registered: dict[str, type], model_dir: Path) -> Any:
    lmm = registered["eve_vlm"](pretrained=str(model_dir), device="cpu", batch_size=2, max_new_tokens=4)
    lmm.task_dict = {"toy": {"test": DOCS}}
    return lmm


def _image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


DOCS = [
    {"image": _image(60, 40, 1), "question": "What digit is this?", "options": [" yes", " no", " the cat"]},
    {"image": _image(112, 112, 2), "question": "Is it a cat on the mat, yes or no?", "options": [" A", " B"]},
    {"image": _image(30, 90, 3), "question": "What does this emoji show?", "options": [" 1"]},
]
SUFFIX = "\nAnswer the question using a single word or phrase."


def doc_to_visual(doc: dict) -> list:
    return [doc["image"]]


def doc_to_text(doc: dict) -> str:
    return doc["question"] + SUFFIX


def doc_to_messages(doc: dict) -> list[dict]:
    """As lmms-eval's automatic doc_to_messages builds them from doc_to_visual and doc_to_text."""
    return [
        {
            "role": "user",
            "content": [{"type": "image", "url": doc["image"]}, {"type": "text", "text": doc_to_text(doc)}],
        }
    ]


def reference(model_dir: Path, batch_size: int = 1) -> EveGenerator:
    """The same model on the path `eve-vlm eval` takes."""
    return EveGenerator(*load_model(model_dir, device="cpu"), batch_size=batch_size)


# ------------------------------------------------------------------------------------- registration


def test_entry_point_manifest_names_the_plugin_classes(registered: dict[str, type]) -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    entry_points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]["lmms_eval.models"]
    module_name, _, function = entry_points["eve_vlm"].partition(":")
    manifest = getattr(importlib.import_module(module_name), function)()
    assert isinstance(manifest, FakeModelManifest) and manifest.model_id == "eve_vlm"

    def resolve(class_path: str) -> type:
        module, _, name = class_path.rpartition(".")
        return getattr(importlib.import_module(module), name)

    chat, simple = resolve(manifest.chat_class_path), resolve(manifest.simple_class_path)
    assert issubclass(chat, FakeLmms) and chat.is_simple is False  # lmms-eval checks this pairing
    assert issubclass(simple, FakeLmms) and simple.is_simple is True
    assert registered == {"eve_vlm": chat}


# ------------------------------------------------------------------------------------ generate_until


def test_generate_until_answers_as_eve_eval_does(plugin: Any, model_dir: Path) -> None:
    gen_kwargs = {"max_new_tokens": 4, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    chat = [
        FakeInstance("generate_until", ("ctx", doc_to_messages, dict(gen_kwargs), i, "toy", "test"))
        for i in range(3)
    ]
    chat_without_context = [
        FakeInstance("generate_until", (doc_to_messages, dict(gen_kwargs), i, "toy", "test"))
        for i in range(3)
    ]
    simple = [
        FakeInstance("generate_until", (doc_to_text(doc), dict(gen_kwargs), doc_to_visual, i, "toy", "test"))
        for i, doc in enumerate(DOCS)
    ]

    items = [EvalItem(i, [doc["image"]], doc_to_text(doc)) for i, doc in enumerate(DOCS)]
    expected = reference(model_dir).answer_fn(max_new_tokens=4)(items)
    assert plugin.generate_until(chat) == expected
    assert plugin.generate_until(chat_without_context) == expected
    assert plugin.generate_until(simple) == expected
    assert plugin.cached[-1] == ("generate_until", (doc_to_text(DOCS[2]), gen_kwargs), expected[2])


def test_generate_until_honours_each_requests_gen_kwargs(plugin: Any, model_dir: Path) -> None:
    short = {"max_new_tokens": 2, "until": "\n\n"}
    long = {"max_new_tokens": 6}
    requests = [
        FakeInstance("generate_until", (doc_to_text(doc), kwargs, doc_to_visual, i, "toy", "test"))
        for i, (doc, kwargs) in enumerate(zip(DOCS, [short, long, short]))
    ]
    answers = plugin.generate_until(requests)

    generator = reference(model_dir)
    for i, (doc, kwargs) in enumerate(zip(DOCS, [short, long, short])):
        params = SamplingParams(max_new_tokens=kwargs["max_new_tokens"], stop=("\n\n",) * ("until" in kwargs))
        request = GenerationRequest([user_message(doc_to_text(doc), 1)], [doc["image"]], params)
        assert answers[i] == generator.generate([request])[0]
    # stop strings are cut: the first answer of 6 tokens, stopped at a piece of itself
    full = plugin.generate_until(requests[1:2])[0]
    stop = full[2:4]
    cut = plugin.generate_until(
        [
            FakeInstance(
                "generate_until",
                (
                    doc_to_text(DOCS[1]),
                    {"max_new_tokens": 6, "until": [stop]},
                    doc_to_visual,
                    1,
                    "toy",
                    "test",
                ),
            )
        ]
    )[0]
    assert cut == full[: full.index(stop)].strip()


def test_gen_kwargs_become_sampling_params(
    registered: dict[str, type], caplog: pytest.LogCaptureFixture
) -> None:
    sampling_params = sys.modules[PLUGIN].sampling_params
    assert sampling_params({}, 128) == SamplingParams(max_new_tokens=128)
    assert sampling_params({"until": "\n\n", "do_sample": True}, 128) == SamplingParams(128, stop=("\n\n",))
    with caplog.at_level("WARNING"):
        params = sampling_params(
            {"until": ["", "\n\n"], "max_new_tokens": 5, "temperature": 0.5, "top_p": None, "num_beams": 3},
            128,
        )
    assert params == SamplingParams(max_new_tokens=5, temperature=0.5, stop=("\n\n",))
    assert "ignoring num_beams=3" in caplog.text  # no beam search: decoded as the other settings say


def test_simple_context_may_place_the_image_itself(plugin: Any, model_dir: Path) -> None:
    context = "<image>\n" + doc_to_text(DOCS[0])
    answer = plugin.generate_until(
        [FakeInstance("generate_until", (context, {}, doc_to_visual, 0, "toy", "test"))]
    )
    expected = reference(model_dir).answer_fn(max_new_tokens=4)(
        [EvalItem(0, [DOCS[0]["image"]], doc_to_text(DOCS[0]))]
    )
    assert answer == expected  # same prompt: user_message also writes "<image>\n" before the text


def test_other_media_are_refused(plugin: Any) -> None:
    def video_messages(doc: dict) -> list[dict]:
        return [
            {"role": "user", "content": [{"type": "video", "url": "clip.mp4"}, {"type": "text", "text": "?"}]}
        ]

    with pytest.raises(ValueError, match="'video' part"):
        plugin.generate_until([FakeInstance("generate_until", ("", video_messages, {}, 0, "toy", "test"))])


# ------------------------------------------------------------------------------------- loglikelihood


def test_loglikelihood_is_a_loss_so_lmms_evals_argmin_picks_the_likeliest(
    plugin: Any, model_dir: Path
) -> None:
    requests = [
        FakeInstance("loglikelihood", (doc_to_text(doc), option, doc_to_visual, i, "toy", "test"))
        for i, doc in enumerate(DOCS)
        for option in doc["options"]
    ]
    results = plugin.loglikelihood(requests)

    generator = reference(model_dir, batch_size=3)
    prompts = [
        GenerationRequest([user_message(doc_to_text(doc), 1)], [doc["image"]])
        for doc in DOCS
        for _ in doc["options"]
    ]
    log_probs = generator.loglikelihood(prompts, [option for doc in DOCS for option in doc["options"]])
    assert [loss for loss, _ in results] == pytest.approx([-lp for lp, _ in log_probs], abs=1e-4)
    assert [greedy for _, greedy in results] == [greedy for _, greedy in log_probs]
    assert all(loss > 0 for loss, _ in results)
    # lmms-eval's multiple_choice: pred = np.argmin(lls)
    first = [loss for loss, _ in results[:3]]
    assert int(np.argmin(first)) == int(np.argmax([lp for lp, _ in log_probs[:3]]))

    # the continuation may come from doc_to_target(doc)
    by_target = plugin.loglikelihood(
        [
            FakeInstance(
                "loglikelihood",
                (doc_to_text(DOCS[1]), lambda doc: doc["options"][1], doc_to_visual, 1, "toy", "test"),
            )
        ]
    )
    assert by_target[0] == pytest.approx(results[4], abs=1e-4)


# ------------------------------------------------------------------------------------- multi-round


def test_generate_until_multi_round_simple_and_chat(plugin: Any, model_dir: Path) -> None:
    """Three rounds, each asked afresh with the round's text; the task sees the answers so far."""
    calls = []

    def next_text(doc: dict, previous_output: list[str], round_idx: int, previous_round_info: Any) -> tuple:
        calls.append((list(previous_output), round_idx, previous_round_info))
        text = f"Round {round_idx}: what changed?"
        return [doc["image"]], text, round_idx == 3, previous_output, {"round": round_idx}

    def messages(
        doc: dict, round_idx: int = 0, previous_output: Any = None, previous_round_info: Any = None
    ) -> Any:
        if round_idx == 0:
            return doc_to_messages(doc)
        visuals, text, done, previous, info = next_text(doc, previous_output, round_idx, previous_round_info)
        turn = [{"type": "image", "url": visuals[0]}, {"type": "text", "text": text}]
        return (None if done else [{"role": "user", "content": turn}]), done, previous, info

    gen_kwargs = {"max_new_tokens": 4, "until": ["\n\n"]}
    simple = FakeInstance(
        "generate_until_multi_round",
        (doc_to_text(DOCS[0]), dict(gen_kwargs), doc_to_visual, next_text, 0, "toy", "test"),
    )
    chat = FakeInstance("generate_until_multi_round", ("ctx", messages, dict(gen_kwargs), 0, "toy", "test"))
    answers = plugin.generate_until_multi_round([simple, chat])

    generator = reference(model_dir)
    contexts = [doc_to_text(DOCS[0]), "Round 1: what changed?", "Round 2: what changed?"]
    expected = [
        generator.generate(
            [GenerationRequest([user_message(c, 1)], [DOCS[0]["image"]], SamplingParams(max_new_tokens=4))]
        )[0]
        for c in contexts
    ]
    assert answers == [expected, expected]
    rounds = [(1, 1, None), (2, 2, {"round": 1}), (3, 3, {"round": 2})]
    assert [(len(previous), idx, info) for previous, idx, info in calls] == rounds * 2
    assert calls[2][0] == expected[:3]


# -------------------------------------------------------------------------------- real lmms-eval


def test_with_a_real_lmms_eval_install(model_dir: Path) -> None:
    pytest.importorskip("lmms_eval", reason=REAL_LMMS_REASON)
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    cls = get_model("eve_vlm")  # through the installed entry point
    lmm = cls.create_from_arg_string(
        f"pretrained={model_dir},max_new_tokens=6", {"batch_size": 2, "device": "cpu"}
    )
    lmm.task_dict = {"toy": {"test": DOCS}}
    requests = [
        Instance(
            request_type="generate_until",
            idx=0,
            arguments=("ctx", doc_to_messages, {"max_new_tokens": 6, "until": ["\n\n"]}, i, "toy", "test"),
            metadata={"task": "toy", "doc_id": i, "repeats": 1},
        )
        for i in range(3)
    ]
    items = [EvalItem(i, [doc["image"]], doc_to_text(doc)) for i, doc in enumerate(DOCS)]
    assert lmm.generate_until(requests) == reference(model_dir).answer_fn(max_new_tokens=6)(items)
