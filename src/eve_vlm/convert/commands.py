"""`eve-vlm convert-official SRC DST` and `eve-vlm export-official SRC DST`: reference EVE checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert-official", help="convert a reference EVE checkpoint (EVE-7B, EVE-7B-HD) to eve-vlm",
        description="Read a reference EVE checkpoint folder (config.json, safetensors or .bin weights, the "
                    "LLM's tokenizer) and write an eve-vlm checkpoint with its processor; the PAL weights go "
                    "to DST/aligner/, the CLIP teacher is dropped.")
    convert.add_argument("src", type=Path, help="the reference checkpoint folder")
    convert.add_argument("dst", type=Path, help="a new, empty folder for the eve-vlm checkpoint")
    convert.add_argument("--image-size", type=int, default=None, choices=(672, 1344),
                         help="longest image edge (default: read from the name of mm_vision_tower)")
    convert.add_argument("--tokenizer", type=Path, default=None,
                         help="folder of the LLM's tokenizer (default: SRC)")
    convert.add_argument("--max-shard-size", default="2GB", help="largest weight file written (default 2GB)")
    convert.set_defaults(func=_convert)

    export = subparsers.add_parser(
        "export-official", help="export an eve-vlm checkpoint to the reference EVE layout",
        description="Write an eve-vlm checkpoint (and its aligner) in the reference EVE layout, with a "
                    "reference config.json, so that the reference evaluation scripts can load it.")
    export.add_argument("src", type=Path, help="the eve-vlm checkpoint folder")
    export.add_argument("dst", type=Path, help="a new, empty folder (the reference scripts want 'eve' in its name)")
    export.add_argument("--aligner", type=Path, default=None,
                        help="the PAL folder written by PatchAligner.save_pretrained (default: SRC/aligner if any)")
    export.add_argument("--vision-tower", default=None,
                        help="mm_vision_tower, the reference preprocessor folder "
                             "(default: openai/eve-patch14-anypixel-<image_size>)")
    export.add_argument("--vision-tower-clip", default="openai/clip-vit-large-patch14-336",
                        help="mm_vision_tower_clip, the teacher the reference trains with")
    export.add_argument("--tokenizer", type=Path, default=None,
                        help="copy the tokenizer files from this folder (e.g. the base LLM, for older "
                             "transformers) instead of SRC's")
    export.add_argument("--max-shard-size", default="2GB", help="largest weight file written (default 2GB)")
    export.set_defaults(func=_export)


def _convert(args: argparse.Namespace) -> int:
    from .official import convert_official
    from .tensors import parse_size

    try:
        summary = convert_official(args.src, args.dst, image_size=args.image_size, tokenizer_dir=args.tokenizer,
                                   max_shard_bytes=parse_size(args.max_shard_size))
    except (ValueError, OSError) as e:  # a mismatched checkpoint, a missing file, a used DST
        raise SystemExit(f"eve-vlm convert-official: {e}") from e
    print(f"{args.dst}: {summary.tensors} tensors ({summary.nbytes / 1e9:.2f} GB)"
          + (f", aligner with {summary.aligner_tensors} tensors in {args.dst / 'aligner'}"
             if summary.aligner_tensors else ", no aligner in the source"))
    for part, (count, nbytes) in summary.dropped.items():
        print(f"dropped {count} {part} tensors ({nbytes / 1e9:.2f} GB)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .official import export_official
    from .tensors import parse_size

    try:
        summary = export_official(args.src, args.dst, aligner_dir=args.aligner, vision_tower=args.vision_tower,
                                  vision_tower_clip=args.vision_tower_clip, tokenizer_dir=args.tokenizer,
                                  max_shard_bytes=parse_size(args.max_shard_size))
    except (ValueError, OSError) as e:
        raise SystemExit(f"eve-vlm export-official: {e}") from e
    print(f"{args.dst}: {summary.tensors + summary.aligner_tensors} tensors "
          f"({summary.aligner_tensors} of the aligner), {summary.nbytes / 1e9:.2f} GB")
    return 0
