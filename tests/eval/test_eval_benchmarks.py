"""Every benchmark adapter end to end through ``run_benchmark`` on a tiny fixture in its public layout.

Each ``build_*`` writes a few records (images drawn with PIL) under ``tmp_path``, and returns a
:class:`Case`: the answers a fake deterministic model gives per item id, and the headline score
computed by hand from those answers.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from eve_vlm.eval import BENCHMARKS, BenchmarkDataError, EvalItem, run_benchmark
from eve_vlm.eval.base import MULTIPLE_CHOICE_SUFFIX, SHORT_ANSWER_SUFFIX
from eve_vlm.eval.runner import PAPER_RESULTS


def _image(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@dataclass
class Case:
    data_dir: Path
    answers: dict[Any, str]
    headline: float | None
    load_options: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)  # further hand-computed score() entries
    submission: Any = None  # the expected submission.json, where checked


class FakeModel:
    """Answers from a fixed table (unknown ids: ""), recording every call."""

    def __init__(self, answers: dict[Any, str]) -> None:
        self.answers = answers
        self.calls: list[list[Any]] = []

    def __call__(self, items: list[EvalItem]) -> list[str]:
        self.calls.append([item.id for item in items])
        return [self.answers.get(item.id, "") for item in items]

    @property
    def asked(self) -> list[Any]:
        return [item_id for call in self.calls for item_id in call]


# ------------------------------------------------------------------------------------ builders


def build_vqav2(root: Path) -> Case:
    questions, annotations = [], []
    gts = {
        1: ["two"] * 2 + ["three"] * 8,  # "2" matches 2 annotators -> 0.6
        2: ["yes"] * 10,  # "Yes." -> 1.0
        3: ["the dog"] + ["cat"] * 9,  # "Dog" matches 1 -> 0.3
    }
    for qid, answers in gts.items():
        image_id = 100 + qid
        questions.append({"question_id": qid, "image_id": image_id, "question": f"Question {qid}?"})
        annotations.append(
            {"question_id": qid, "image_id": image_id, "answers": [{"answer": a} for a in answers]}
        )
        _image(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
    _write_json(root / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": questions})
    _write_json(root / "v2_mscoco_val2014_annotations.json", {"annotations": annotations})
    submission = [
        {"question_id": 1, "answer": "2"},
        {"question_id": 2, "answer": "yes"},
        {"question_id": 3, "answer": "dog"},
    ]
    return Case(root, {1: "2", 2: "Yes.", 3: "Dog"}, 100 * (0.6 + 1.0 + 0.3) / 3, submission=submission)


def build_gqa(root: Path) -> Case:
    questions = {
        "201": {"imageId": "n1", "question": "Is it red?", "answer": "yes"},
        "202": {"imageId": "n2", "question": "Which side?", "answer": "left"},
        "203": {"imageId": "n1", "question": "What color?", "answer": "red"},
    }
    for image_id in ("n1", "n2"):
        _image(root / "images" / f"{image_id}.jpg")
    _write_json(root / "testdev_balanced_questions.json", questions)
    submission = [
        {"questionId": "201", "prediction": "yes"},
        {"questionId": "202", "prediction": "left side"},
        {"questionId": "203", "prediction": "red"},
    ]
    return Case(root, {"201": "Yes.", "202": "Left side", "203": "red"}, 200 / 3, submission=submission)


def build_vizwiz(root: Path) -> Case:
    records = [
        {
            "image": "VizWiz_val_00000000.jpg",
            "question": "What is this?",
            "answers": [{"answer": "unanswerable"}] * 3 + [{"answer": "blue"}] * 7,
        },  # 3 matches -> 0.9
        {"image": "VizWiz_val_00000001.jpg", "question": "What color?", "answers": [{"answer": "blue"}] * 10},
    ]
    for record in records:
        _image(root / "val" / record["image"])
    _write_json(root / "Annotations" / "val.json", records)
    answers = {"VizWiz_val_00000000.jpg": "Unanswerable", "VizWiz_val_00000001.jpg": "Blue"}
    return Case(root, answers, 100 * (0.9 + 1.0) / 2)


def build_textvqa(root: Path) -> Case:
    data = [
        {
            "question_id": 34602,
            "image_id": "003a8ae2ef43b901",
            "question": "what brand?",
            "answers": ["stop"] * 10,
        },
        {
            "question_id": 34603,
            "image_id": "003a8ae2ef43b901",
            "question": "what drink?",
            "answers": ["coca cola"] * 4 + ["coke"] * 6,
        },
    ]
    _image(root / "train_images" / "003a8ae2ef43b901.jpg")
    _write_json(root / "TextVQA_0.5.1_val.json", {"data": data})
    return Case(root, {34602: "STOP", 34603: "pepsi"}, 50.0)


def build_scienceqa_img(root: Path) -> Case:
    problems = {
        "1": {
            "question": "Which is a mammal?",
            "choices": ["frog", "cat", "trout"],
            "answer": 1,
            "hint": "",
            "image": "image.png",
            "split": "test",
        },
        "2": {
            "question": "No image here?",
            "choices": ["a", "b"],
            "answer": 0,
            "hint": "",
            "image": None,
            "split": "test",
        },
        "3": {
            "question": "Which is hotter?",
            "choices": ["sun", "ice"],
            "answer": 0,
            "hint": "Look at the picture.",
            "image": "image.png",
            "split": "test",
        },
        "4": {
            "question": "Train only",
            "choices": ["a", "b"],
            "answer": 0,
            "hint": "",
            "image": "image.png",
            "split": "train",
        },
    }
    for pid in ("1", "3"):
        _image(root / "images" / "test" / pid / "image.png")
    _write_json(root / "problems.json", problems)
    _write_json(root / "pid_splits.json", {"test": ["1", "2", "3"], "train": ["4"]})
    return Case(root, {"1": "B.", "3": "The answer is B"}, 50.0)


def build_pope(root: Path) -> Case:
    labels_and_answers = {
        "random": [("yes", "Yes."), ("no", "No, there is not a dog.")],  # acc 100, F1 100
        "popular": [("yes", "No"), ("no", "no")],  # TP0 FP0 TN1 FN1: F1 0
        "adversarial": [("yes", "There is a dog."), ("no", "I see a cat")],  # TP1 FP1: P .5 R 1 F1 2/3
    }
    answers = {}
    for split, pairs in labels_and_answers.items():
        records = []
        for qid, (label, answer) in enumerate(pairs, start=1):
            image = f"COCO_val2014_{qid:012d}.jpg"
            records.append(
                {"question_id": qid, "image": image, "text": f"Is there a dog? ({split})", "label": label}
            )
            answers[f"{split}_{qid}"] = answer
        _write_jsonl(root / "coco" / f"coco_pope_{split}.json", records)
    for qid in (1, 2):
        _image(root / "val2014" / f"COCO_val2014_{qid:012d}.jpg")
    scores = {
        "accuracy": (100 + 50 + 50) / 3,
        "splits.popular.recall": 0.0,
        "splits.adversarial.precision": 50.0,
    }
    return Case(root, answers, (100.0 + 0.0 + 200 / 3) / 3, scores=scores)


def build_mme(root: Path) -> Case:
    release = root / "MME_Benchmark_release_version"
    # existence: flat layout, two images
    for name in ("000000006040", "000000006041"):
        _image(release / "existence" / f"{name}.jpg")
        (release / "existence" / f"{name}.txt").write_text(
            "Is there a dog in this image? Please answer yes or no.\tYes\n"
            "Is there a cat in this image? Please answer yes or no.\tNo\n\n",
            encoding="utf-8",
        )
    # artwork: images/ + questions_answers_YN/ layout
    _image(release / "artwork" / "images" / "10002.jpg")
    (release / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (release / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this a painting? Please answer yes or no.\tYes\n"
        "Is this glassware? Please answer yes or no.\tNo\n",
        encoding="utf-8",
    )
    # commonsense_reasoning (cognition): flat, png
    _image(release / "commonsense_reasoning" / "0001.png")
    (release / "commonsense_reasoning" / "0001.txt").write_text(
        "Should I wear a coat? Please answer yes or no.\tYes\nIs it summer? Please answer yes or no.\tNo\n",
        encoding="utf-8",
    )
    answers = {
        "existence/000000006040.jpg#0": "Yes",
        "existence/000000006040.jpg#1": "No.",  # image 1: both right
        "existence/000000006041.jpg#0": "yes",
        "existence/000000006041.jpg#1": "Yes",  # image 2: one right -> acc 75, acc+ 50 -> 125
        "artwork/10002.jpg#0": "Yes, it is.",
        "artwork/10002.jpg#1": "I cannot tell",  # "other" -> acc 50, acc+ 0 -> 50
        "commonsense_reasoning/0001.png#0": "y",
        "commonsense_reasoning/0001.png#1": "no",  # 200
    }
    options = {"subtasks": ["existence", "artwork", "commonsense_reasoning"]}
    scores = {
        "cognition": 200.0,
        "subtasks.existence.acc": 75.0,
        "subtasks.existence.acc_plus": 50.0,
        "subtasks.artwork.score": 50.0,
    }
    return Case(root, answers, 175.0, load_options=options, scores=scores)


def _png_base64(color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_mmbench(root: Path) -> Case:
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = [
        [0, "What animal?", "nan", "dog", "cat", "bird", "fish", "B", "cls", _png_base64((255, 0, 0))],
        [1, "Is it day?", "Look at the sky.", "yes", "no", "", "nan", "A", "cls", _png_base64((0, 255, 0))],
        [2, "Is it red?", "", "yes", "no", "", "", "B", "cls", "0"],  # VLMEvalKit: reuses row 0's image
    ]
    root.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    (root / "mmbench_dev_20230712.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # The right letter moves with the rotation: question 0 (answer B of 4) -> B, A, D, C.
    answers = {
        0: "B",
        1_000_000: "A.",
        2_000_000: "(D)",
        3_000_000: "The answer is C",  # all right
        1: "A",
        1_000_001: "A",  # shift 1 wants B: wrong
        2: "B",
        1_000_002: "no",  # shift 1 shows [no, yes]: "no" is option A, the right one
    }
    return Case(root, answers, 200 / 3, scores={"first_pass_accuracy": 100.0, "num_questions": 3})


def build_seed_bench(root: Path) -> Case:
    questions = [
        {
            "question_id": "101669",
            "question": "How many towels?",
            "choice_a": "One",
            "choice_b": "Two",
            "choice_c": "Three",
            "choice_d": "Four",
            "answer": "A",
            "data_id": "1454426_2591111986.jpg",
            "data_type": "image",
            "question_type_id": 5,
        },
        {
            "question_id": "101670",
            "question": "Where is it?",
            "choice_a": "Park",
            "choice_b": "Beach",
            "choice_c": "Room",
            "choice_d": "Road",
            "answer": "D",
            "data_id": "1454427_2591111987",
            "data_type": "image",
            "question_type_id": 1,
        },
        {
            "question_id": "v1",
            "question": "What happens next?",
            "choice_a": "a",
            "choice_b": "b",
            "choice_c": "c",
            "choice_d": "d",
            "answer": "A",
            "data_id": "video.mp4",
            "data_type": "video",
            "question_type_id": 10,
        },
    ]
    _image(root / "SEED-Bench-image" / "1454426_2591111986.jpg")
    _image(root / "SEED-Bench-image" / "1454427_2591111987.jpg")
    _write_json(
        root / "SEED-Bench.json",
        {"questions": questions, "question_type": {"Scene Understanding": 1, "Instances Counting": 5}},
    )
    scores = {"question_types.Instances Counting": 100.0, "question_types.Scene Understanding": 0.0}
    return Case(root, {"101669": "A", "101670": "C"}, 50.0, scores=scores)


def build_mmvet(root: Path) -> Case:
    data = {
        "v1_0": {
            "imagename": "v1_0.png",
            "question": "What is x?",
            "answer": "-1 <AND> -5",
            "capability": ["math"],
        },
        "v1_1": {
            "imagename": "v1_1.png",
            "question": "What is written?",
            "answer": "hi",
            "capability": ["ocr"],
        },
    }
    for record in data.values():
        _image(root / "images" / record["imagename"])
    _write_json(root / "mm-vet.json", data)
    answers = {"v1_0": "x = -1 or -5", "v1_1": "hi"}
    return Case(root, answers, None, scores={"num_answered": 2}, submission=answers)


BUILDERS: dict[str, Callable[[Path], Case]] = {
    "vqav2": build_vqav2,
    "gqa": build_gqa,
    "vizwiz": build_vizwiz,
    "textvqa": build_textvqa,
    "scienceqa_img": build_scienceqa_img,
    "pope": build_pope,
    "mme": build_mme,
    "mmbench": build_mmbench,
    "seed_bench": build_seed_bench,
    "mmvet": build_mmvet,
}


def test_every_registered_benchmark_has_a_fixture() -> None:
    assert set(BUILDERS) == set(BENCHMARKS)


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", list(BUILDERS))
def test_run_benchmark_end_to_end(name: str, tmp_path: Path) -> None:
    case = BUILDERS[name](tmp_path / "data")
    out = tmp_path / "out"
    model = FakeModel(case.answers)
    scores = run_benchmark(name, case.data_dir, out, model, batch_size=2, load_options=case.load_options)

    # every question asked once, in batches of at most 2
    assert sorted(model.asked, key=str) == sorted(case.answers, key=str)
    assert all(len(call) <= 2 for call in model.calls)

    # predictions.jsonl: one {"id", "answer"} per question
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["id"]: r["answer"] for r in records} == case.answers
    assert len(records) == len(case.answers)

    # scores.json matches the hand computation
    report = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    assert report["benchmark"] == name
    assert report["num_items"] == len(case.answers)
    module = BENCHMARKS[name]
    if case.headline is None:
        assert report["headline"] is None
    else:
        assert report["headline"] == pytest.approx(case.headline)
        assert scores[module.HEADLINE] == pytest.approx(case.headline)
    for dotted_key, value in case.scores.items():
        entry: Any = scores
        for key in dotted_key.split("."):
            entry = entry[key]
        assert entry == pytest.approx(value), dotted_key

    # submission.json exactly where the benchmark has an official format
    assert (out / "submission.json").exists() == hasattr(module, "submission")
    if case.submission is not None:
        assert json.loads((out / "submission.json").read_text(encoding="utf-8")) == case.submission

    # results.md: our number beside the paper's rows
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert f"| model | {module.PAPER_COLUMN} |" in markdown
    for paper_model, numbers in PAPER_RESULTS.items():
        assert f"| {paper_model} (paper) | {numbers[name]:.1f} |" in markdown
    ours = "-" if case.headline is None else f"{case.headline:.1f}"
    assert f"| this model | {ours} |" in markdown

    # resume: a second run asks nothing and scores the same
    again = FakeModel({})
    assert run_benchmark(name, case.data_dir, out, again, load_options=case.load_options) == scores
    assert again.calls == []


def test_resume_after_a_crash_asks_only_unanswered_ids(tmp_path: Path) -> None:
    case = build_vqav2(tmp_path / "data")
    out = tmp_path / "out"

    class Crash(Exception):
        pass

    first = FakeModel(case.answers)

    def crash_on_second_batch(items: list[EvalItem]) -> list[str]:
        if first.calls:
            raise Crash
        return first(items)

    with pytest.raises(Crash):
        run_benchmark("vqav2", case.data_dir, out, crash_on_second_batch, batch_size=2)
    assert first.asked == [1, 2]
    assert not (out / "scores.json").exists()

    second = FakeModel(case.answers)
    scores = run_benchmark("vqav2", case.data_dir, out, second, batch_size=2)
    assert second.asked == [3]
    assert scores["accuracy"] == pytest.approx(case.headline)
    assert len((out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == 3


def test_resume_ignores_an_unfinished_last_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    case = build_gqa(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.jsonl").write_text(
        '{"id": "201", "answer": "Yes."}\n{"id": "202", "ans', encoding="utf-8"
    )
    model = FakeModel(case.answers)
    scores = run_benchmark("gqa", case.data_dir, out, model)
    assert model.asked == ["202", "203"]
    assert "unfinished last line" in caplog.text
    assert scores["accuracy"] == pytest.approx(case.headline)
    records = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [r["id"] for r in records] == ["201", "202", "203"]


def test_limit_and_bad_answer_fn(tmp_path: Path) -> None:
    case = build_mmbench(tmp_path / "data")
    model = FakeModel(case.answers)
    run_benchmark("mmbench", case.data_dir, tmp_path / "out", model, limit=1)
    assert sorted(model.asked) == [0, 1_000_000, 2_000_000, 3_000_000]  # one question, all its shifts

    with pytest.raises(ValueError, match="answers for a batch"):
        run_benchmark("gqa", build_gqa(tmp_path / "gqa").data_dir, tmp_path / "out2", lambda items: ["x"])
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_benchmark("nope", tmp_path, tmp_path / "out3", FakeModel({}))


# -------------------------------------------------------------------------------- adapter details


def test_prompts_carry_the_eve_suffixes(tmp_path: Path) -> None:
    vqa = BENCHMARKS["vqav2"].load(build_vqav2(tmp_path / "vqa").data_dir)
    assert vqa[0].prompt == f"Question 1?\n{SHORT_ANSWER_SUFFIX}"
    assert vqa[0].images[0].name == "COCO_val2014_000000000101.jpg"

    sqa = BENCHMARKS["scienceqa_img"].load(build_scienceqa_img(tmp_path / "sqa").data_dir)
    assert [item.id for item in sqa] == ["1", "3"]  # no-image and train problems dropped
    assert (
        sqa[1].prompt
        == f"Context: Look at the picture.\nWhich is hotter?\nA. sun\nB. ice\n{MULTIPLE_CHOICE_SUFFIX}"
    )

    mmb = BENCHMARKS["mmbench"].load(build_mmbench(tmp_path / "mmb").data_dir)
    shift1 = next(item for item in mmb if item.id == 1_000_001)
    assert shift1.prompt == f"Look at the sky.\nIs it day?\nA. no\nB. yes\n{MULTIPLE_CHOICE_SUFFIX}"
    assert shift1.meta["answer"] == "B"
    reused = next(item for item in mmb if item.id == 2)
    assert reused.images[0].convert("RGB").getpixel((0, 0)) == (255, 0, 0)

    seed = BENCHMARKS["seed_bench"].load(build_seed_bench(tmp_path / "seed").data_dir)
    assert [item.id for item in seed] == ["101669", "101670"]  # the video question is dropped


def test_textvqa_uses_llava_ocr_prompts_when_present(tmp_path: Path) -> None:
    case = build_textvqa(tmp_path)
    _write_jsonl(
        tmp_path / "llava_textvqa_val_v051_ocr.jsonl",
        [{"question_id": 34602, "text": "what brand?\nReference OCR token: STOP, sign"}],
    )
    items = BENCHMARKS["textvqa"].load(case.data_dir)
    assert items[0].prompt == f"what brand?\nReference OCR token: STOP, sign\n{SHORT_ANSWER_SUFFIX}"
    assert items[1].prompt == f"what drink?\n{SHORT_ANSWER_SUFFIX}"


def test_vqav2_test_dev_has_no_ground_truth_but_a_submission(tmp_path: Path) -> None:
    _write_json(
        tmp_path / "v2_OpenEnded_mscoco_test-dev2015_questions.json",
        {"questions": [{"question_id": 9, "image_id": 5, "question": "Why?"}]},
    )
    _image(tmp_path / "test2015" / "COCO_test2015_000000000005.jpg")
    module = BENCHMARKS["vqav2"]
    items = module.load(tmp_path, split="test-dev2015")
    assert module.score(items, {9: "Because"})["accuracy"] is None
    assert module.submission(items, {9: "Two dogs."}) == [{"question_id": 9, "answer": "2 dogs"}]


def test_score_requires_every_prediction(tmp_path: Path) -> None:
    items = BENCHMARKS["gqa"].load(build_gqa(tmp_path).data_dir)
    with pytest.raises(ValueError, match="no prediction"):
        BENCHMARKS["gqa"].score(items, {"201": "yes"})


# ------------------------------------------------------------------------------------ bad input


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataError, match="v2_OpenEnded_mscoco_val2014_questions.json"):
        BENCHMARKS["vqav2"].load(tmp_path)
    with pytest.raises(BenchmarkDataError, match="coco_pope_random.json"):
        BENCHMARKS["pope"].load(tmp_path)


def test_missing_image_names_file_and_record(tmp_path: Path) -> None:
    case = build_gqa(tmp_path)
    (tmp_path / "images" / "n2.jpg").unlink()
    with pytest.raises(BenchmarkDataError, match=r"n2\.jpg \(record '202'\): missing image"):
        BENCHMARKS["gqa"].load(case.data_dir)


def test_malformed_records_name_file_and_record(tmp_path: Path) -> None:
    build_pope(tmp_path)
    path = tmp_path / "coco" / "coco_pope_popular.json"
    _write_jsonl(
        path, [{"question_id": 7, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a cat?"}]
    )
    with pytest.raises(
        BenchmarkDataError, match=r"coco_pope_popular\.json \(record 7\): missing field 'label'"
    ):
        BENCHMARKS["pope"].load(tmp_path)

    path.write_text('{"question_id": 1,\n', encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=r"coco_pope_popular\.json: malformed JSON on line 1"):
        BENCHMARKS["pope"].load(tmp_path)


def test_malformed_mme_line_names_the_file(tmp_path: Path) -> None:
    build_mme(tmp_path)
    bad = tmp_path / "MME_Benchmark_release_version" / "existence" / "000000006041.txt"
    bad.write_text("Is there a dog? Yes\n", encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=r"000000006041\.txt: line 1"):
        BENCHMARKS["mme"].load(tmp_path, subtasks=["existence"])
    with pytest.raises(BenchmarkDataError, match="missing MME subtask folder"):
        BENCHMARKS["mme"].load(tmp_path, subtasks=["count"])


def test_malformed_mmbench_row_names_the_record(tmp_path: Path) -> None:
    build_mmbench(tmp_path)
    path = tmp_path / "mmbench_dev_20230712.tsv"
    path.write_text(path.read_text(encoding="utf-8").replace("\tB\tcls\t", "\tZ\tcls\t", 1), encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=r"\(record 0\): answer 'Z'"):
        BENCHMARKS["mmbench"].load(tmp_path)


def test_item_is_frozen() -> None:
    item = EvalItem(id=1, images=[], prompt="p")
    with pytest.raises(AttributeError):
        item.prompt = "q"  # type: ignore[misc]
