"""Sources -> deterministic, length-grouped, rank-sharded training batches.

The epoch plan (which samples form which micro-batch) is a pure function of the seed, the epoch
and the sources, computed from cheap length estimates before any image is decoded. Process `r`
of `n` takes micro-batches r, r+n, ...: one process with gradient accumulation and n processes
see the same global batches. A position in the plan is all it takes to resume.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .image import ImageError, load_image
from .processor import IGNORE_INDEX, EveProcessor
from .sources import DataError, Sample, Source
from .templates import ConversationError

logger = logging.getLogger(__name__)
TeacherTransform = Callable[[Any, tuple[int, int]], torch.Tensor]


def epoch_plan(sources: Sequence[Source], weights: Sequence[float], micro_batch: int, seed: int, epoch: int,
               group_size: int = 64) -> list[list[tuple[int, int]]]:
    """Micro-batches of (source index, item index) for one epoch.

    Source i contributes round(weights[i] * len) samples (a weight of 2 repeats it, 0.5 halves it),
    shuffled together; every `group_size` micro-batches are sorted by length so padding stays small,
    then the micro-batches are shuffled again. A final partial micro-batch is dropped.
    """
    rng = random.Random(seed * 7919 + epoch)
    order: list[tuple[int, int]] = []
    for s, (source, weight) in enumerate(zip(sources, weights)):
        count = round(weight * len(source))
        indices = [i % len(source) for i in range(count)]
        rng.shuffle(indices)
        order += [(s, i) for i in indices]
    rng.shuffle(order)
    batches: list[list[tuple[int, int]]] = []
    chunk = micro_batch * group_size
    for start in range(0, len(order) - len(order) % micro_batch, chunk):
        window = order[start:start + chunk]
        window = window[: len(window) - len(window) % micro_batch]
        window.sort(key=lambda item: sources[item[0]].text_length(item[1]))
        group = [window[i:i + micro_batch] for i in range(0, len(window), micro_batch)]
        rng.shuffle(group)
        batches += group
    return batches


@dataclass
class SkipPolicy:
    """What to do with a bad sample: stop at once (max_skip_ratio=0) or skip it and count.

    Strict (0): the first bad sample raises its error, naming the file, the record and the field.
    Lenient (>0): `TrainBatches` leaves the sample out and reports it in the batch; `account`, run
    by the process that trains (never by a DataLoader worker, whose copy of the policy would count
    alone), counts it and stops the run with a report naming the records once skipped/seen exceeds
    `max_skip_ratio` (checked from `min_seen` samples on). Over-long samples that can be cut
    without losing an image or every answer are truncated to max_length, counted as well.
    """

    max_skip_ratio: float = 0.0
    min_seen: int = 100
    seen: int = 0
    skipped: int = 0
    truncated: int = 0
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """One entry per record that was skipped or truncated: source, record, outcome, reason, count."""

    @property
    def strict(self) -> bool:
        return self.max_skip_ratio <= 0

    def account(self, batch: dict[str, Any]) -> None:
        """Take a batch's data report (`num_samples`, `skipped`, `truncated`) into the counts."""
        self.seen += batch.pop("num_samples", 0)
        for outcome in ("skipped", "truncated"):
            for entry in batch.pop(outcome, []):
                setattr(self, outcome, getattr(self, outcome) + 1)
                known = self.records.setdefault(f"{outcome}:{entry['source']}:{entry['record']}",
                                                {**entry, "outcome": outcome, "count": 0})
                known["count"] += 1
                if known["count"] == 1:
                    log = logger.warning if outcome == "skipped" else logger.info
                    log("%s sample %s:%s: %s", outcome, entry["source"], entry["record"], entry["reason"])
        if self.skipped and self.seen >= self.min_seen and self.skipped / self.seen > self.max_skip_ratio:
            bad = [r for r in self.records.values() if r["outcome"] == "skipped"]
            names = "; ".join(f"{r['source']}:{r['record']}: {r['reason']}" for r in bad[:20])
            raise DataError("data", None, f"{self.skipped} of {self.seen} samples were bad, over the allowed "
                                          f"ratio {self.max_skip_ratio} (data.max_skip_ratio): {names}"
                                          + (f"; and {len(bad) - 20} more records" if len(bad) > 20 else ""))

    def report(self, outcome: str = "skipped") -> list[dict[str, Any]]:
        """The records with this outcome, one entry each (how often, and why)."""
        return [r for r in self.records.values() if r["outcome"] == outcome]

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "skipped": self.skipped, "truncated": self.truncated,
                "records": list(self.records.items())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.skipped, self.truncated = state["seen"], state["skipped"], state["truncated"]
        self.records = dict(state["records"])


def _report_entry(source: str, record: str, reason: str) -> dict[str, str]:
    return {"source": source, "record": record, "reason": reason}


class TrainBatches(IterableDataset):
    """Encoded, collated micro-batches of this process, from plan position `start` on.

    Each batch carries its data report: `num_samples` planned, `skipped` and `truncated` entries
    (`num_skipped` too); `SkipPolicy.account` consumes them. A micro-batch whose samples are all
    bad holds the next good sample of the plan instead, so no batch is empty.
    """

    def __init__(self, sources: Sequence[Source], weights: Sequence[float], processor: EveProcessor,
                 micro_batch: int, max_length: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 teacher_transform: TeacherTransform | None = None, patch_ratio: int = 1,
                 skip_policy: SkipPolicy | None = None, group_size: int = 64) -> None:
        self.sources, self.weights = list(sources), list(weights)
        self.processor = processor
        self.micro_batch, self.max_length = micro_batch, max_length
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.teacher_transform, self.patch_ratio = teacher_transform, patch_ratio
        self.skip_policy = skip_policy or SkipPolicy()
        self.group_size = group_size
        self.start = 0  # global micro-batch position to resume from (set before iterating)
        self.epochs = 1
        if self.skip_policy.strict:  # fail fast: a damaged file is known before the first step
            for source in self.sources:
                if source.index_errors:
                    raise source.index_errors[0]

    def batches_per_epoch(self) -> int:
        samples = sum(round(w * len(s)) for s, w in zip(self.sources, self.weights))
        return samples // self.micro_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        per_epoch = self.batches_per_epoch()
        position = self.start
        while position < per_epoch * self.epochs:
            epoch, offset = divmod(position, per_epoch)
            plan = epoch_plan(self.sources, self.weights, self.micro_batch, self.seed, epoch, self.group_size)
            for index in range(offset, per_epoch):
                step_slot = index - self.rank  # global micro-batch index -> this rank's slot
                if step_slot % self.world_size == 0 and (step_slot // self.world_size) % workers == worker_id:
                    yield self.encode_batch(plan[index], epoch * per_epoch + index, _after(plan, index))
            position = (epoch + 1) * per_epoch

    def encode_batch(self, items: list[tuple[int, int]], position: int,
                     fallback: Iterable[tuple[int, int]] = ()) -> dict[str, Any]:
        encoded, skipped, truncated = [], [], []
        for s, i in items:
            record = f"#{i}"  # until the record names itself
            try:
                sample = self.sources[s][i]
                record = sample.id
                out = self._encode(sample)
            except (DataError, ImageError, ConversationError, ValueError) as e:
                record = str(e.record) if isinstance(e, DataError) and e.record is not None else record
                if self.skip_policy.strict and isinstance(e, DataError):
                    raise
                if self.skip_policy.strict:  # say which record it was
                    raise DataError(str(getattr(self.sources[s], "path", self.sources[s].name)), record,
                                    f"{type(e).__name__}: {e}") from e
                skipped.append(_report_entry(self.sources[s].name, record, f"{type(e).__name__}: {e}"))
                continue
            encoded.append(out)
            if out["truncated_from"]:
                truncated.append(_report_entry(self.sources[s].name, record, f"{out['truncated_from']} tokens "
                                               f"truncated to max_length {self.max_length}"))
        if not encoded:
            encoded.append(self._first_good(fallback, position))
        batch = collate_train(encoded, self.processor)
        batch.update(position=position, num_samples=len(items), num_skipped=len(skipped), skipped=skipped,
                     truncated=truncated)
        return batch

    def _encode(self, sample: Sample) -> dict[str, Any]:
        return encode_sample(sample, self.processor, self.max_length, self.teacher_transform, self.patch_ratio)

    def _first_good(self, fallback: Iterable[tuple[int, int]], position: int, limit: int = 1024) -> dict[str, Any]:
        """The first sample of `fallback` that encodes (not counted: it is counted in its own batch)."""
        for tried, (s, i) in enumerate(fallback):
            if tried == limit:
                break
            try:
                return self._encode(self.sources[s][i])
            except (DataError, ImageError, ConversationError, ValueError):
                continue
        raise DataError("data", None, f"micro-batch {position} and the {limit} samples planned after it "
                                      "hold no usable sample")


def _after(plan: list[list[tuple[int, int]]], index: int) -> Iterator[tuple[int, int]]:
    """The plan's items after micro-batch `index`, wrapping around (read lazily)."""
    for batch in itertools.chain(itertools.islice(plan, index + 1, None), itertools.islice(plan, index)):
        yield from batch


def encode_sample(sample: Sample, processor: EveProcessor, max_length: int,
                  teacher_transform: TeacherTransform | None = None, patch_ratio: int = 1) -> dict[str, Any]:
    """One sample -> ids, labels, EVE pixels, image grids (+ teacher pixels when aligning).

    An over-long sample is cut to `max_length` (`truncated_from` gives its length, else 0) unless
    that would cut an image or every answer: then it is a DataError.
    """
    images = [load_image(image) for image in sample.images]
    encoded = processor.encode_conversation(sample.messages, images)
    ids, labels = encoded["input_ids"], encoded["labels"]
    truncated_from = len(ids) if len(ids) > max_length else 0
    if truncated_from:
        last_image = max((k for k, t in enumerate(ids) if t == processor.image_token_id), default=-1)
        if last_image >= max_length or all(t == IGNORE_INDEX for t in labels[:max_length]):
            raise DataError(sample.source, sample.id, f"over-long sample: {len(ids)} tokens > max_length "
                                                      f"{max_length} and truncation would cut an image or "
                                                      "every answer")
        ids, labels = ids[:max_length], labels[:max_length]
    if not any(t != IGNORE_INDEX for t in labels):
        raise DataError(sample.source, sample.id, "no answer tokens to learn from")
    step = processor.patch_size * processor.pool_size
    grids = [(p.shape[-2] // step, p.shape[-1] // step) for p in encoded["pixel_values"]]
    out = {"input_ids": ids, "labels": labels, "pixel_values": encoded["pixel_values"], "grids": grids,
           "patch_ratio": patch_ratio, "truncated_from": truncated_from}
    if teacher_transform is not None:
        for h, w in grids:
            if h % patch_ratio or w % patch_ratio:
                raise DataError(sample.source, sample.id, f"image grid {h}x{w} not divisible by the "
                                                          f"teacher patch ratio {patch_ratio}")
        out["teacher_pixel_values"] = [teacher_transform(image, (h // patch_ratio, w // patch_ratio))
                                       for image, (h, w) in zip(images, grids)]
    return out


def collate_train(samples: list[dict[str, Any]], processor: EveProcessor) -> dict[str, Any]:
    """Right-padded batch + where each teacher patch's student tokens sit in the flat (B*T) sequence.

    `patch_positions` (N, r*r): the r x r student tokens (CLS and SPLIT removed) pooled into one
    teacher patch; `patch_image` (N,): the image each teacher patch belongs to.
    """
    batch = processor.collate(samples, padding_side="right")
    length = batch["input_ids"].shape[1]
    positions, image_of_patch, teacher_grids, image_number = [], [], [], 0
    has_teacher = all("teacher_pixel_values" in s for s in samples)
    for row, sample in enumerate(samples):
        image_positions = (batch["input_ids"][row] == processor.image_token_id).nonzero().flatten()
        cursor = 0
        for h, w in sample["grids"]:
            run = image_positions[cursor:cursor + 1 + h * (w + 1)]
            cursor += run.numel()
            grid = run[1:].view(h, w + 1)[:, :w] + row * length  # drop CLS, then SPLIT column
            if has_teacher:
                r = sample["patch_ratio"]
                pooled = grid.view(h // r, r, w // r, r).permute(0, 2, 1, 3).reshape(-1, r * r)
                positions.append(pooled)
                image_of_patch.append(torch.full((pooled.shape[0],), image_number, dtype=torch.long))
                teacher_grids.append((h // r, w // r))
            image_number += 1
    if has_teacher and positions:
        batch["patch_positions"] = torch.cat(positions)
        batch["patch_image"] = torch.cat(image_of_patch)
        batch["teacher_grids"] = teacher_grids
        teacher_images = [t for s in samples for t in s["teacher_pixel_values"]]
        sizes = {tuple(t.shape) for t in teacher_images}
        batch["teacher_pixel_values"] = torch.stack(teacher_images) if len(sizes) == 1 else teacher_images
    batch["num_tokens"] = int(batch["attention_mask"].sum())
    return batch

