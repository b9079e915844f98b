"""Read and write ``.safetensors`` files with numpy only.

Why not ``safetensors.numpy``?  numpy has no bfloat16, so that API cannot load the
bf16 adapters most trainers write, and its errors on a truncated file do not say
which tensor is cut.  The format is a length-prefixed JSON header followed by raw
little-endian bytes, so a careful reader is short; this one memory-maps the file
(tensors are read lazily, by key) and checks every offset against the file size
before anything is read.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import AdapterFormatError

# safetensors dtype name -> (numpy storage dtype, item size).  BF16 is stored as uint16.
_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile:
    """A validated safetensors file (memory-mapped) or in-memory blob; tensors are read by key."""

    def __init__(self, path: str | os.PathLike, data: np.ndarray | None = None):
        self.path = Path(path)
        if data is None:
            size = self.path.stat().st_size
            data = np.memmap(self.path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        self._buffer = data
        size = data.size
        if size < 8:
            raise AdapterFormatError("not a safetensors file (shorter than 8 bytes)", self.path)
        (header_len,) = struct.unpack("<Q", data[:8].tobytes())
        if header_len > min(size - 8, _MAX_HEADER):
            raise AdapterFormatError(
                f"truncated or not a safetensors file (header says {header_len} bytes, file has {size})", self.path
            )
        try:
            header = json.loads(data[8:8 + header_len].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AdapterFormatError(f"malformed safetensors header ({exc})", self.path) from None
        if not isinstance(header, dict):
            raise AdapterFormatError("malformed safetensors header (not a JSON object)", self.path)
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_len
        data_len = size - self._data_start
        self._entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for key, entry in header.items():
            try:
                dtype, shape, (start, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise AdapterFormatError(f"malformed header entry for tensor {key!r}", self.path) from None
            if dtype not in _DTYPES:
                raise AdapterFormatError(f"tensor {key!r} has unsupported dtype {dtype}", self.path)
            expected = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
            if end - start != expected or start < 0:
                raise AdapterFormatError(
                    f"tensor {key!r}: header offsets [{start}, {end}) do not fit dtype {dtype} and shape {list(shape)}",
                    self.path,
                )
            if end > data_len:
                raise AdapterFormatError(
                    f"truncated file: tensor {key!r} needs {end} data bytes, the file holds {data_len}", self.path
                )
            self._entries[key] = (dtype, shape, start, end)
        spans = sorted((start, end, key) for key, (_, _, start, end) in self._entries.items() if end > start)
        for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
            if start < end:  # the official safetensors library refuses such files too
                raise AdapterFormatError(f"tensors {first!r} and {second!r} overlap in the data section", self.path)

    @property
    def blob(self) -> np.ndarray:
        """The whole file as a uint8 array."""
        return self._buffer

    def keys(self) -> list[str]:
        return list(self._entries)

    def dtype(self, key: str) -> str:
        return self._entries[key][0]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def raw(self, key: str) -> np.ndarray:
        """The tensor as stored (BF16 as uint16), a read-only view of the mapped file."""
        dtype, shape, start, end = self._entries[key]
        buf = self._buffer[self._data_start + start: self._data_start + end]
        return buf.view(_DTYPES[dtype]).reshape(shape)

    def float32(self, key: str) -> np.ndarray:
        """The tensor as a new float32 array (BF16 widened exactly)."""
        return to_float32(self.raw(key), self.dtype(key))


def all_finite(array: np.ndarray) -> bool:
    """True when no value is NaN or inf; a sum first, so the common case allocates nothing."""
    if np.isfinite(array.sum(dtype=np.float64)):
        return True
    return bool(np.isfinite(array).all())  # a huge-but-finite sum can overflow: check every value


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return np.array(raw, dtype=np.float32)  # a copy: the mapped file stays read-only


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest, ties to even); returns the uint16 bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def numpy_dtype_name(array: np.ndarray) -> str:
    names = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64",
             np.dtype("<i4"): "I32", np.dtype("u1"): "U8", np.dtype("?"): "BOOL"}
    return names[array.dtype]


def write_safetensors(
    path: str | os.PathLike | BinaryIO,
    tensors: dict[str, np.ndarray],
    *,
    dtypes: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write tensors; ``dtypes[key] == "BF16"`` marks a uint16 array holding bf16 bits."""
    dtypes = dtypes or {}
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    arrays = []
    for key in sorted(tensors):
        array = np.ascontiguousarray(tensors[key])
        dtype = dtypes.get(key) or numpy_dtype_name(array)
        header[key] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with (open(path, "wb") if isinstance(path, (str, os.PathLike)) else contextlib.nullcontext(path)) as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for array in arrays:
            handle.write(memoryview(array).cast("B"))
