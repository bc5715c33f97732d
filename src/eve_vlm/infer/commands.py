"""`eve-vlm chat` and `eve-vlm generate`: argument parsing only; the work is in chat.py and batch.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and transformers load only when a command runs
    from .engine import Generator
    from .params import SamplingParams


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --quantization (shared with `eve-vlm serve`)."""
    parser.add_argument("--model", required=True, type=Path, help="folder of a saved EVE model and processor")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="auto: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--quantization", default=None, choices=("8bit", "4bit"),
                        help="bitsandbytes quantization of the LLM (needs a CUDA GPU)")


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="most tokens per answer")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1 = off)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")


def load_generator(args: argparse.Namespace) -> Generator:
    from .engine import Generator
    from .loading import load_model

    model, processor = load_model(args.model, device=args.device, dtype=args.dtype,
                                  quantization=args.quantization)
    return Generator(model, processor)


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    from .params import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, stop=tuple(args.stop))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    chat = subparsers.add_parser("chat", help="chat with a model in the terminal (streams; /image, /reset, /quit)",
                                 description="Interactive chat. Lines starting with / are commands: /image PATH, "
                                             "/reset, /quit. Reads a script from stdin when it is not a terminal.")
    add_model_arguments(chat)
    add_sampling_arguments(chat)
    chat.add_argument("--image", action="append", default=[], help="an image for the first message (repeatable)")
    chat.add_argument("--system", default=None, help="a system message")
    chat.set_defaults(func=_chat)

    generate = subparsers.add_parser("generate", help="batched offline answers for a JSONL file of prompts",
                                     description="One JSON object per input line: id, image (path or list), "
                                                 "prompt or messages. Resumable: ids already in --output are "
                                                 "skipped. Exit code 1 when some lines failed.")
    add_model_arguments(generate)
    add_sampling_arguments(generate)
    generate.add_argument("--input", required=True, type=Path, help="prompts, one JSON object per line")
    generate.add_argument("--output", required=True, type=Path, help="answers (JSONL; appended to)")
    generate.add_argument("--batch-size", type=int, default=8, help="requests per generate call")
    generate.add_argument("--image-root", type=Path, default=None,
                          help="folder that image paths are relative to (default: the input file's folder)")
    generate.add_argument("--no-progress", action="store_true", help="no progress bar")
    generate.set_defaults(func=_generate)


def _chat(args: argparse.Namespace) -> int:
    from .chat import ChatSession, run_chat

    try:
        session = ChatSession(load_generator(args), sampling_params(args), system=args.system)
        for image in args.image:
            session.add_image(image)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_chat(session, sys.stdin, sys.stdout)


def _generate(args: argparse.Namespace) -> int:
    from .batch import run_batch

    if not args.input.exists():
        print(f"error: --input {args.input} does not exist", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size={args.batch_size} must be >= 1", file=sys.stderr)
        return 2
    try:
        params = sampling_params(args)
        generator = load_generator(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = run_batch(generator, args.input, args.output, params, batch_size=args.batch_size,
                        image_root=args.image_root, progress=not args.no_progress)
    print(f"{summary.answered} answered, {summary.skipped} already done, {summary.failed} failed "
          f"-> {args.output}")
    return 1 if summary.failed else 0
