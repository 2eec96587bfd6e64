"""Read safetensors headers (names, dtypes, shapes, byte ranges) without loading tensors, and compare raw bytes.

The format is an 8-byte little-endian header length, a JSON header, then the data; `data_offsets` are relative to
the end of the header. Reading it directly keeps verification cheap on multi-GB checkpoints.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FLOAT_DTYPES = frozenset({"BF16", "F16", "F32", "F64"})


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> dict[str, TensorEntry]:
    with path.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", raw_len)
        header = json.loads(fh.read(header_len))
    base = 8 + header_len
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        entries[name] = TensorEntry(name, info["dtype"], tuple(info["shape"]), path, base + begin, base + end)
    return entries


def checkpoint_tensors(model_dir: Path) -> dict[str, TensorEntry]:
    """Every tensor of a checkpoint folder, across shards."""
    entries: dict[str, TensorEntry] = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        entries.update(read_header(shard))
    return entries


def read_bytes(entry: TensorEntry) -> bytes:
    with entry.file.open("rb") as fh:
        fh.seek(entry.start)
        return fh.read(entry.nbytes)


def differing_tensors(baseline: dict[str, TensorEntry], variant: dict[str, TensorEntry],
                      names: Iterable[str]) -> list[str]:
    """Names whose dtype, shape or bytes differ between the two checkpoints (missing counts as differing)."""
    differing = []
    for name in names:
        base, other = baseline.get(name), variant.get(name)
        same_layout = other is not None and base is not None and (base.dtype, base.shape) == (other.dtype, other.shape)
        if not same_layout or read_bytes(base) != read_bytes(other):  # type: ignore[arg-type]
            differing.append(name)
    return differing


def weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))
