"""Per-request stopping and streaming inside one batched `generate` call.

transformers' `generate` stops a batch with criteria shared by all rows (one `max_new_tokens`, one
set of `stop_strings`) and its text streamers take one row. Requests batched together each have
their own limits, stop strings, stream and cancellation, so `BatchTracker`, a `StoppingCriteria`
(called once per decoding step with every row's ids), follows each row: it feeds the row's new
token to that row's streamer and marks the row finished. transformers still does all the decoding:
finished rows get padding and the loop ends when every row is finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, TextStreamer
from transformers.generation.streamers import BaseStreamer

# Extra tokens decoded around a possible stop string (tokens that decode to no text, word joins).
_STOP_WINDOW_MARGIN = 8


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the stop string that completes first, and whether one was found.

    "Completes first" is what generation sees: with stops "c" and "aca", "aaca" stops at "aac",
    so the answer is "aa" (on a tie, the longer stop, which starts earlier, wins)."""
    hits = [(i + len(s), i) for s in stop if (i := text.find(s)) >= 0]
    return (text[: min(hits)[1]], True) if hits else (text, False)


class StopFilter:
    """Streamed text with everything from the first stop string on removed.

    Text that might be the beginning of a stop string is held back until the next piece shows
    whether it is, so the concatenated output equals `cut_at_stop` of the whole text.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(stop)
        self.stopped = False
        self._pending = ""

    def push(self, text: str) -> str:
        """The part of `text` (and of what was held back) that can be released now."""
        if self.stopped:
            return ""
        self._pending += text
        released, self.stopped = cut_at_stop(self._pending, self.stop)
        if self.stopped:
            self._pending = ""
            return released
        keep = self._partial_stop_length()
        released = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep:]
        return released

    def flush(self) -> str:
        """What is still held back, at the end of the stream."""
        released, self._pending = ("" if self.stopped else self._pending), ""
        return released

    def _partial_stop_length(self) -> int:
        """Length of the longest end of the pending text that begins some stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(s[:n]):
                    longest = n
                    break
        return longest


class CallbackStreamer(TextStreamer):
    """transformers' incremental detokenizer for one row, handing text (stop strings cut) to a callback.

    `on_text(text, done)` is called from the generating thread; `done` is True exactly once, last.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str],
                 on_text: Callable[[str, bool], None]) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self.filter = StopFilter(stop)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        released = self.filter.push(text)
        if stream_end:
            released += self.filter.flush()
        if released or stream_end:
            self.on_text(released, stream_end)


@dataclass
class Row:
    """One request's state inside a batch."""

    max_new_tokens: int
    stop: tuple[str, ...] = ()
    streamer: BaseStreamer | None = None
    cancelled: threading.Event | None = None
    tokens: list[int] = field(default_factory=list)
    """Generated ids, EOS excluded."""
    finish_reason: str | None = None


class BatchTracker(StoppingCriteria):
    """Per-row max_new_tokens, EOS, stop strings, cancellation and streaming for one `generate` call."""

    def __init__(self, rows: Sequence[Row], tokenizer: PreTrainedTokenizerBase, eos_token_ids: Sequence[int]) -> None:
        self.rows = list(rows)
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None = None, **_: object) -> torch.BoolTensor:
        new_tokens = input_ids[:, -1].tolist()  # (B,): this step's token of every row
        for row, token in zip(self.rows, new_tokens):
            if row.finish_reason is None:
                self._step(row, token)
        done = [row.finish_reason is not None for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _step(self, row: Row, token: int) -> None:
        if token in self.eos_token_ids:
            self.finish(row, "stop")
            return
        row.tokens.append(token)
        if row.streamer is not None:
            row.streamer.put(torch.tensor([token]))
        if row.stop and self._ends_with_stop(row):
            self.finish(row, "stop")
        elif len(row.tokens) >= row.max_new_tokens:
            self.finish(row, "length")
        elif row.cancelled is not None and row.cancelled.is_set():
            self.finish(row, "cancelled")

    def _ends_with_stop(self, row: Row) -> bool:
        """Whether the last tokens' text holds a stop string (checked every step, so it just appeared)."""
        window = max(len(s) for s in row.stop) + _STOP_WINDOW_MARGIN
        tail = self.tokenizer.decode(row.tokens[-window:], skip_special_tokens=True)
        return cut_at_stop(tail, row.stop)[1]

    def finish(self, row: Row, reason: str) -> None:
        row.finish_reason = reason
        if row.streamer is not None:
            row.streamer.end()

    def finish_all(self, reason: str) -> None:
        """End the rows `generate` left unfinished (its own length limit, or an error)."""
        for row in self.rows:
            if row.finish_reason is None:
                self.finish(row, reason)
