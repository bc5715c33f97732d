"""Bad training data: every kind gives a clear, counted outcome, never a crash and never a silent skip.

The corpus (corpus.py) holds each kind once, in a LLaVA jsonl file or in WebDataset shards. A
strict policy (data.max_skip_ratio = 0) stops at the first bad sample with an error naming the file,
the record and the field; a lenient one skips and counts it, in the DataLoader workers or not, up to
the ratio; the counts reach metrics.jsonl and the records skipped.jsonl. Valid but unusual images
(CMYK, 16-bit, palette with transparency, 1x1, 1x10000, EXIF) train under the strict policy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from corpus import BY_NAME, KINDS, TEACHER_KINDS, Kind
from torch.utils.data import DataLoader

from eve_vlm.data.pipeline import SkipPolicy, TrainBatches, encode_sample
from eve_vlm.data.processor import EveProcessor
from eve_vlm.data.sources import DataError, LlavaSource, WebDatasetSource
from eve_vlm.testing import tiny_config, tiny_tokenizer
from eve_vlm.train.loop import train
from eve_vlm.train.recipe import load_recipe
from eve_vlm.train.teacher import TeacherInput

pytestmark = pytest.mark.timeout(300)
MAX_LENGTH = 160
TEACHER_INPUT = TeacherInput(14, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 56, False)


@pytest.fixture(scope="module")
def processor() -> EveProcessor:
    return EveProcessor.from_config(tiny_tokenizer(), tiny_config(image_size=56, template="vicuna_v1"))


def sources(corpus) -> list:
    return [LlavaSource(corpus.jsonl, corpus.image_root, name="llava"), WebDatasetSource(corpus.shard_glob,
                                                                                         name="shards")]


def entries_of(corpus, kind: Kind) -> list[tuple[int, int]]:
    """(source index, item index) of every entry of this kind."""
    kinds = corpus.llava_kinds if kind.source == "llava" else corpus.shard_kinds
    return [(0 if kind.source == "llava" else 1, i) for i, k in enumerate(kinds) if k == kind.name]


def test_the_corpus_covers_at_least_25_kinds():
    assert len(KINDS) + len(TEACHER_KINDS) >= 25
    assert len({k.name for k in KINDS}) == len(KINDS)
    for kind in KINDS:
        assert (kind.outcome == "error") == (kind.error is not None), kind.name


@pytest.mark.parametrize("name", [k.name for k in KINDS])
def test_each_kind_has_its_clear_outcome(corpus, processor, name):
    kind = BY_NAME[name]
    found = entries_of(corpus, kind)
    assert found, f"no entry of kind {name!r} in the corpus"
    all_sources = sources(corpus)
    for s, i in found:
        if kind.outcome == "error":
            with pytest.raises(kind.error, match=kind.pattern):
                encode_sample(all_sources[s][i], processor, MAX_LENGTH, TEACHER_INPUT)
            continue
        out = encode_sample(all_sources[s][i], processor, MAX_LENGTH, TEACHER_INPUT)
        assert out["truncated_from"] > MAX_LENGTH if kind.outcome == "truncated" else out["truncated_from"] == 0
        assert len(out["input_ids"]) <= MAX_LENGTH
        for pixels, teacher in zip(out["pixel_values"], out["teacher_pixel_values"]):
            assert pixels.shape[0] == 3 and max(pixels.shape[1:]) == 56 and torch.isfinite(pixels).all()
            assert torch.isfinite(teacher).all()


def test_valid_odd_images_keep_their_shape(corpus, processor):
    llava = sources(corpus)[0]
    shapes = {}
    for name in ("1x1 image", "1x10000 image", "10000x1 image", "EXIF-rotated JPEG"):
        (_, i), = entries_of(corpus, BY_NAME[name])
        shapes[name] = tuple(encode_sample(llava[i], processor, MAX_LENGTH)["pixel_values"][0].shape[1:])
    assert shapes == {"1x1 image": (56, 56), "1x10000 image": (56, 28), "10000x1 image": (28, 56),
                      "EXIF-rotated JPEG": (56, 28)}  # 40x20 stored, shown 20 wide x 40 high


def expected_skips(corpus) -> dict[str, int]:
    """kind name -> how many entries of that kind are skipped in one epoch."""
    counts: dict[str, int] = {}
    for kind in KINDS:
        if kind.outcome == "error":
            counts[kind.name] = len(entries_of(corpus, kind))
    return counts


def run_epoch(corpus, processor, policy: SkipPolicy, num_workers: int) -> list[dict]:
    batches = TrainBatches(sources(corpus), [1.0, 1.0], processor, 2, MAX_LENGTH, teacher_transform=TEACHER_INPUT,
                           skip_policy=policy)
    assert batches.batches_per_epoch() * 2 == len(corpus.llava_kinds) + len(corpus.shard_kinds)  # none dropped
    seen = []
    for batch in DataLoader(batches, batch_size=None, num_workers=num_workers):
        policy.account(batch)
        seen.append(batch)
    return seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lenient_policy_skips_counts_and_names_every_bad_entry(corpus, processor, num_workers):
    policy = SkipPolicy(max_skip_ratio=0.99)
    batches = run_epoch(corpus, processor, policy, num_workers)
    total = len(corpus.llava_kinds) + len(corpus.shard_kinds)
    expected = expected_skips(corpus)
    assert policy.seen == total
    assert policy.skipped == sum(expected.values())
    assert all(b["input_ids"].shape[0] >= 1 for b in batches)  # an all-bad micro-batch borrows a good sample
    assert sum(b["input_ids"].shape[0] for b in batches) >= total - policy.skipped
    matched: dict[str, int] = {}
    for entry in policy.report("skipped"):
        kinds = [k.name for k in KINDS if k.outcome == "error" and k.error.__name__ in entry["reason"]
                 and re.search(k.pattern, entry["reason"])]
        assert len(kinds) == 1, (entry, kinds)
        assert entry["count"] == 1
        matched[kinds[0]] = matched.get(kinds[0], 0) + 1
    assert matched == expected  # each bad kind skipped exactly as often as it occurs: nothing silent
    assert policy.truncated == 1 and [r["record"] for r in policy.report("truncated")] == ["longanswer"]
    valid = {"cmyk", "deep", "palette", "dot", "tall", "wide", "rotated"}
    assert not valid & {r["record"] for r in policy.report("skipped")}


def test_workers_count_like_one_process(corpus, processor):
    alone, pooled = SkipPolicy(max_skip_ratio=0.99), SkipPolicy(max_skip_ratio=0.99)
    run_epoch(corpus, processor, alone, 0)
    run_epoch(corpus, processor, pooled, 2)
    assert alone.state_dict() == pooled.state_dict()


def test_past_the_ratio_the_run_stops_with_a_report_naming_the_records(corpus, processor):
    with pytest.raises(DataError, match=r"of \d+ samples were bad, over the allowed ratio 0\.2 "
                                        r"\(data\.max_skip_ratio\): .*(llava|shards):"):
        run_epoch(corpus, processor, SkipPolicy(max_skip_ratio=0.2, min_seen=10), 0)


def test_strict_policy_fails_fast_on_a_damaged_file(corpus, processor):
    with pytest.raises(DataError, match=r"data\.jsonl record line \d+: malformed JSON"):
        TrainBatches(sources(corpus), [1.0, 1.0], processor, 2, MAX_LENGTH)  # before any step


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize(("image", "error", "pattern"), [
    ("../outside.png", DataError, r"data\.jsonl record first: image path '\.\./outside\.png' escapes"),
    ("nowhere.png", DataError, r"data\.jsonl record first: ImageError: \S+nowhere\.png: no such image file")])
def test_strict_policy_stops_at_the_first_bad_sample_with_its_error(tmp_path, corpus, processor, num_workers, image,
                                                                     error, pattern):
    from corpus import qa

    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(qa(f"{name}", img)) for name, img in
                               [("first", image), ("second", "good.png")]))
    batches = TrainBatches([LlavaSource(jsonl, corpus.image_root)], [1.0], processor, 2, MAX_LENGTH)
    with pytest.raises(error, match=pattern):  # the error keeps its type through a DataLoader worker
        next(iter(DataLoader(batches, batch_size=None, num_workers=num_workers)))


def corpus_recipe(write_recipe, corpus, name: str, **changes) -> Path:
    data = {"sources": [
        {"kind": "llava", "options": {"path": str(corpus.jsonl), "image_root": str(corpus.image_root),
                                      "name": "llava"}},
        {"kind": "webdataset", "options": {"shards": corpus.shard_glob, "name": "shards"}}],
        "max_length": MAX_LENGTH, "max_skip_ratio": 0.9, "num_workers": 2}
    for key, value in changes.pop("data", {}).items():
        data[key] = value
    return write_recipe(name, data=data, **changes)


def test_training_counts_skips_in_metrics_and_writes_the_report(write_recipe, corpus):
    total = len(corpus.llava_kinds) + len(corpus.shard_kinds)
    recipe = load_recipe(corpus_recipe(write_recipe, corpus, "lenient.yaml", max_steps=total // 4))  # one epoch
    export = train(recipe)
    out = Path(recipe.output_dir)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = sum(expected_skips(corpus).values())
    assert [m["step"] for m in metrics] == list(range(1, total // 4 + 1))
    assert metrics[-1]["skipped_samples"] == skipped and metrics[-1]["truncated_samples"] == 1
    assert all(m["loss"] == m["loss"] for m in metrics)  # finite: bad samples never reached the model
    report = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(report) == skipped
    assert all(set(r) == {"source", "record", "reason", "outcome", "count"} and r["reason"] for r in report)
    assert {r["record"] for r in report} >= {"cutjpg", "megabomb", "escape", "longquestion", "<after 0 keys>"}
    truncated = [json.loads(line) for line in (out / "truncated.jsonl").read_text().splitlines()]
    assert [r["record"] for r in truncated] == ["longanswer"]
    assert (export / "model.safetensors").exists()


def test_training_stops_past_the_ratio_and_still_writes_the_report(write_recipe, corpus):
    total = len(corpus.llava_kinds) + len(corpus.shard_kinds)
    recipe = load_recipe(corpus_recipe(write_recipe, corpus, "ratio.yaml", max_steps=3 * total // 4, data={
        "max_skip_ratio": 0.3, "num_workers": 0, "sources": _weighted(corpus, 3)}))  # the check starts at 100 seen
    with pytest.raises(DataError, match=r"over the allowed ratio 0\.3 \(data\.max_skip_ratio\): (llava|shards):") as info:
        train(recipe)
    skipped, seen = (int(n) for n in re.search(r"(\d+) of (\d+) samples were bad", str(info.value)).groups())
    assert seen >= 100 and skipped / seen > 0.3
    out = Path(recipe.output_dir)
    report = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert sum(r["count"] for r in report) == skipped  # each record once, with how often it was skipped
    assert not (out / "export").exists()


def _weighted(corpus, weight: float) -> list[dict]:
    return [{"kind": "llava", "weight": weight, "options": {"path": str(corpus.jsonl),
                                                            "image_root": str(corpus.image_root), "name": "llava"}},
            {"kind": "webdataset", "weight": weight, "options": {"shards": corpus.shard_glob, "name": "shards"}}]


def test_valid_but_unusual_images_train_under_the_strict_policy(write_recipe, corpus, tmp_path):
    from corpus import qa

    valid = {"cmyk": "cmyk.jpg", "deep": "deep.png", "palette": "palette.png", "dot": "dot.png", "tall": "tall.png",
             "wide": "wide.png", "rotated": "rotated.jpg", "good": "good.png"}
    jsonl = tmp_path / "valid.jsonl"
    jsonl.write_text("\n".join(json.dumps(qa(name, image)) for name, image in valid.items()))
    recipe = load_recipe(write_recipe("valid.yaml", max_steps=4, data={  # two epochs of 8 samples
        "sources": [{"kind": "llava", "options": {"path": str(jsonl), "image_root": str(corpus.image_root)}}],
        "max_length": MAX_LENGTH, "max_skip_ratio": 0.0}))
    train(recipe)  # strict: any of them failing would stop the run
    metrics = [json.loads(line) for line in (Path(recipe.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and metrics[-1]["skipped_samples"] == 0
    assert all(torch.isfinite(torch.tensor([m["loss"], m["align"]])).all() for m in metrics)
    assert (Path(recipe.output_dir) / "skipped.jsonl").read_text() == ""


def test_skip_counts_survive_an_interruption(write_recipe, corpus, monkeypatch):
    from eve_vlm.train import loop

    total = len(corpus.llava_kinds) + len(corpus.shard_kinds)
    straight = load_recipe(corpus_recipe(write_recipe, corpus, "straight.yaml", max_steps=total // 4,
                                         data={"num_workers": 0}))
    train(straight)
    path = corpus_recipe(write_recipe, corpus, "stopped.yaml", max_steps=total // 4, checkpoint_every=5,
                         data={"num_workers": 0})
    original = loop.save_checkpoint

    def crash_after_checkpoint(run):
        original(run)
        raise KeyboardInterrupt  # killed right after the step-5 checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(load_recipe(path))
    monkeypatch.setattr(loop, "save_checkpoint", original)
    train(load_recipe(path), resume=True)
    for name in ("metrics.jsonl", "skipped.jsonl", "truncated.jsonl"):
        a = (Path(straight.output_dir) / name).read_text().splitlines()
        b = (Path(load_recipe(path).output_dir) / name).read_text().splitlines()
        if name == "metrics.jsonl":  # throughput differs; the counts and losses do not
            keys = ("step", "loss", "skipped_samples", "truncated_samples")
            a, b = ([{k: json.loads(line)[k] for k in keys} for line in rows] for rows in (a, b))
        assert a == b, name
