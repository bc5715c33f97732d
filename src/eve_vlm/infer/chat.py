"""`eve-vlm chat`: a terminal conversation that keeps its history and images and streams answers.

Lines starting with `/` are commands (`/image PATH`, `/reset`, `/quit`, `/help`); any other line
is the next user message, sent with the images added since the last one. Reads a script from
stdin just as well as a person at a terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import IO

from PIL import Image

from ..data.image import load_image
from ..data.templates import Message
from .engine import Generator
from .params import GenerationRequest, SamplingParams

logger = logging.getLogger(__name__)

HELP = "commands: /image PATH (attach an image to your next message), /reset (forget the conversation), /quit"


class ChatSession:
    """One conversation: its messages, the images they refer to, images waiting for the next message."""

    def __init__(self, generator: Generator, params: SamplingParams, system: str | None = None) -> None:
        self.generator = generator
        self.params = params
        self.system = system
        self.reset()

    def reset(self) -> None:
        self.messages: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        self.images: list[Image.Image] = []
        self.pending_images: list[Image.Image] = []

    def add_image(self, source: str) -> None:
        """Load now (so a bad path fails here, with ImageError) and attach to the next message."""
        self.pending_images.append(load_image(source))

    def ask(self, text: str, on_text: Callable[[str], None]) -> str:
        """Stream the answer to `text` through `on_text`; keep the turn in the history."""
        content = [{"type": "image"} for _ in self.pending_images] + [{"type": "text", "text": text}]
        messages = [*self.messages, {"role": "user", "content": content}]
        images = [*self.images, *self.pending_images]
        pieces = []
        for piece in self.generator.stream(GenerationRequest(messages, images, self.params)):
            pieces.append(piece)
            on_text(piece)
        answer = "".join(pieces)
        if answer.strip():  # the templates refuse an empty assistant turn, so such a turn is dropped
            self.messages = [*messages, {"role": "assistant", "content": answer.strip()}]
            self.images, self.pending_images = images, []
        else:
            logger.warning("the model gave an empty answer; this turn is not kept in the history")
        return answer


def run_chat(session: ChatSession, stdin: IO[str], stdout: IO[str]) -> int:
    """The read-answer loop; prompts only when stdin is a terminal. Returns the exit code.

    At a terminal, Ctrl-C stops the answer being written (the turn is not kept) and Ctrl-D quits.
    """
    interactive = stdin.isatty()
    if interactive:
        print(f"EVE chat. {HELP}", file=stdout)
    while (line := _read_line(stdin, stdout, interactive)) is not None:
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not _command(session, line, stdout):
                break
            continue
        if interactive:
            print("eve> ", end="", file=stdout, flush=True)
        try:
            session.ask(line, lambda piece: print(piece, end="", file=stdout, flush=True))
        except ValueError as e:  # a prompt too long for the context, ...: the chat goes on
            print(f"error: {e}", end="", file=stdout)
        except KeyboardInterrupt:
            if not interactive:
                raise
            print(" (stopped)", end="", file=stdout)
        print(file=stdout, flush=True)
    return 0


def _read_line(stdin: IO[str], stdout: IO[str], interactive: bool) -> str | None:
    """The next line, None at the end of the input."""
    if interactive and stdin is sys.stdin:
        import readline  # noqa: F401  (line editing and history for input())

        try:
            return input("you> ")
        except EOFError:
            print(file=stdout)
            return None
    line = stdin.readline()
    return line or None


def _command(session: ChatSession, line: str, stdout: IO[str]) -> bool:
    """Run one /command; False means quit."""
    name, _, argument = line.partition(" ")
    if name in ("/quit", "/exit"):
        return False
    if name == "/reset":
        session.reset()
        print("(conversation reset)", file=stdout, flush=True)
    elif name == "/image" and argument.strip():
        try:
            session.add_image(argument.strip())
            print(f"(image attached: {argument.strip()})", file=stdout, flush=True)
        except ValueError as e:
            print(f"error: {e}", file=stdout, flush=True)
    else:
        print(HELP, file=stdout, flush=True)
    return True
