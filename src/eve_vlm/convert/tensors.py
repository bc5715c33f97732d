"""Checkpoint files read and written one tensor at a time, so that a 7B model never sits in RAM twice.

`TensorSource` lists the tensors of a checkpoint folder (safetensors or PyTorch `.bin`, one file or
shards with an index json) from their headers, then yields them file by file: safetensors through
`safe_open`, `.bin` through a memory-mapped `torch.load`. `ShardedWriter` collects tensors into
safetensors shards of bounded size and writes the index json that transformers reads.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

# Checkpoint layouts of one folder, in the order they are looked for: (index json, single file).
CHECKPOINT_FILES = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
DEFAULT_MAX_SHARD_BYTES = 2_000_000_000
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one stored tensor, read from the file header without its data."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{list(self.shape)} {str(self.dtype).removeprefix('torch.')}"


class TensorSource:
    """The tensors of one checkpoint: a name -> file map, read lazily, one file at a time."""

    def __init__(self, files: Sequence[str | Path]) -> None:
        self.files = [Path(f) for f in files]
        for path in self.files:
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint file {path} does not exist")
        self.specs: dict[str, TensorSpec] = {}
        self._file_of: dict[str, Path] = {}
        for path in self.files:
            for name, spec in _read_specs(path).items():
                if name in self.specs:
                    raise ValueError(f"tensor {name} is stored twice: in {self._file_of[name]} and {path}")
                self.specs[name] = spec
                self._file_of[name] = path

    @classmethod
    def from_directory(cls, directory: str | Path) -> TensorSource:
        """The weights of a transformers-style folder: an index json and its shards, or one file."""
        directory = Path(directory)
        for index_name, single_name in CHECKPOINT_FILES:
            index_path = directory / index_name
            if index_path.is_file():
                weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
                source = cls(sorted({directory / f for f in weight_map.values()}))
                misplaced = sorted(n for n, f in weight_map.items() if source._file_of.get(n) != directory / f)
                if misplaced:
                    raise ValueError(f"{index_path} lists tensors that are not in the named shard: "
                                     f"{', '.join(misplaced[:20])}")
                return source
            if (directory / single_name).is_file():
                return cls([directory / single_name])
        wanted = ", ".join(name for pair in CHECKPOINT_FILES for name in pair)
        raise FileNotFoundError(f"no checkpoint weights in {directory}: looked for {wanted}")

    def tensors(self, names: Collection[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) for `names` (default: all), file by file; `.bin` tensors stay memory-mapped."""
        wanted = set(self.specs if names is None else names)
        for path in self.files:
            if not any(self._file_of[name] == path for name in wanted):
                continue
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                        if name in wanted:
                            yield name, f.get_tensor(name)
            else:
                state = _load_bin(path)
                yield from ((name, t) for name, t in state.items() if name in wanted)
                del state


def _read_specs(path: Path) -> dict[str, TensorSpec]:
    if path.suffix == ".safetensors":
        specs = {}
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118
                tensor_slice = f.get_slice(name)
                dtype = tensor_slice.get_dtype()
                if dtype not in _SAFETENSORS_DTYPES:
                    raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
                specs[name] = TensorSpec(tuple(tensor_slice.get_shape()), _SAFETENSORS_DTYPES[dtype])
        return specs
    return {name: TensorSpec(tuple(t.shape), t.dtype) for name, t in _load_bin(path).items()}


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A PyTorch state dict file, memory-mapped where its format allows (torch >= 1.6 zip files)."""
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        logger.warning("%s is in the legacy torch format and cannot be memory-mapped: loading it whole", path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    return state


class ShardedWriter:
    """Safetensors shards of at most `max_shard_bytes` (one larger tensor gets a shard of its own).

    One shard becomes `<prefix>.safetensors`; several become `<prefix>-0000i-of-0000n.safetensors`
    with `<prefix>.safetensors.index.json`. At most one shard is held in memory.
    """

    def __init__(self, directory: str | Path, prefix: str = "model",
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes={max_shard_bytes} must be positive")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        if tensor.untyped_storage().nbytes() != nbytes or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)  # a view: store only its own data
        self._pending[name] = tensor
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        path = self.directory / f"{self.prefix}-shard{len(self._shards) + 1:05d}.safetensors.tmp"
        save_file(self._pending, str(path), metadata={"format": "pt"})
        self._shards.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        """Write the last shard, give the shards their final names (+ index); returns the files."""
        if self._pending or not self._shards:
            self._flush()
        count = len(self._shards)
        if count == 1:
            final = self.directory / f"{self.prefix}.safetensors"
            self._shards[0][0].replace(final)
            return [final]
        weight_map, files = {}, []
        for i, (path, names) in enumerate(self._shards, start=1):
            final = self.directory / f"{self.prefix}-{i:05d}-of-{count:05d}.safetensors"
            path.replace(final)
            files.append(final)
            weight_map.update(dict.fromkeys(names, final.name))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        index_path = self.directory / f"{self.prefix}.safetensors.index.json"
        index_path.write_text(json.dumps(index, indent=2) + "\n")
        return [index_path, *files]


def parse_size(text: str) -> int:
    """'2GB', '500MB', '1.5G', '4GiB', '1000000' -> bytes (KB/MB/GB decimal, KiB/MiB/GiB binary)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)(I?)B?", text.strip().upper())
    if not match:
        raise ValueError(f"size {text!r} is not a number of bytes with an optional unit (KB, MB, GB, GiB)")
    number, unit, binary = match.groups()
    return int(float(number) * (1024 if binary else 1000) ** " KMGT".index(unit or " "))
