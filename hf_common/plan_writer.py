"""Writing a fusion plan (the layout: ``hf_common.plan``): atomically, every dataset hashed as it is written,
token rows streamed unit by unit into the few that a plan stores."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path

import numpy as np

from .atomic import check_output_path
from .plan import FORMAT_NAME, FORMAT_VERSION, SOURCE_ADAPTER, TARGET_BLOB, combined_checksum, dataset_digest, h5py_module


class GroupSink:
    """Receives one group's arrays.  Rows arrive unit by unit (streamed, never concatenated), each unit's marked
    stored or not: a plan keeps only the stored ones, the others are rebuilt from its adapters on reading."""

    def start_rows(self, side: str, n_rows: int, n_stored: int, rank: int) -> None:
        raise NotImplementedError

    def add_rows(self, side: str, rows: np.ndarray, stored: bool) -> None:
        raise NotImplementedError

    def put(self, name: str, array: np.ndarray) -> None:
        raise NotImplementedError


class MemorySink(GroupSink):
    """Collects a group's arrays in memory (``--check``, tests): every row (``{side}/rows``, as a plan reads them
    back) and the stored ones (``{side}/stored_rows``, as a plan keeps them)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._fill: dict[str, list[int]] = {}

    def start_rows(self, side: str, n_rows: int, n_stored: int, rank: int) -> None:
        self.arrays[f"{side}/rows"] = np.empty((n_rows, rank), np.float32)
        self.arrays[f"{side}/stored_rows"] = np.empty((n_stored, rank), np.float32)
        self._fill[side] = [0, 0]

    def add_rows(self, side: str, rows: np.ndarray, stored: bool) -> None:
        fill = self._fill[side]
        self.arrays[f"{side}/rows"][fill[0]:fill[0] + len(rows)] = rows
        fill[0] += len(rows)
        if stored:
            self.arrays[f"{side}/stored_rows"][fill[1]:fill[1] + len(rows)] = rows
            fill[1] += len(rows)

    def put(self, name: str, array: np.ndarray) -> None:
        self.arrays[name] = array


class PlanWriter:
    """Write a plan atomically: ``with PlanWriter(path) as w: ...``; renamed into place on success."""

    def __init__(self, path: str | os.PathLike, *, force: bool = False, created_by: str = "heterofusion"):
        self.path = Path(path)
        check_output_path(self.path, force, "plan")
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.created_by = created_by
        self._hashes: dict[str, str] = {}
        self._file = None

    def __enter__(self) -> "PlanWriter":
        self._file = h5py_module().File(self.tmp, "w")
        return self

    def _dataset(self, path: str, array: np.ndarray, **attrs: object) -> None:
        h5py = h5py_module()
        if array.dtype.kind == "O":
            dset = self._file.create_dataset(path, data=array.astype(object), dtype=h5py.string_dtype())
        elif array.dtype.kind == "i" and array.size >= 4096:  # (not the adapters: uint8, already dense)
            # index tables (the B rows of every unit are mostly runs of consecutive numbers): deflate after
            # byte-shuffling stores 11 MB of an 8B model's int64 row numbers in 0.2 MB, losslessly, in 0.02 s
            dset = self._file.create_dataset(path, data=array, compression="gzip", compression_opts=1, shuffle=True)
        else:
            dset = self._file.create_dataset(path, data=array)
        digest = dataset_digest(array)
        dset.attrs["sha256"] = digest
        for name, value in attrs.items():
            dset.attrs[name] = value
        self._hashes[path] = digest

    def write_text(self, name: str, text: str) -> None:
        self._dataset(f"meta/{name}", np.asarray([text], dtype=object))

    def add_target_adapter(self, safetensors_blob: np.ndarray) -> None:
        """The target adapter's tensors, as one safetensors file (exported tensors keep their dtype)."""
        self._dataset(TARGET_BLOB, np.asarray(safetensors_blob, np.uint8))

    def add_source_adapter(self, index: int, config_text: str, safetensors_blob: np.ndarray) -> None:
        """A source adapter, verbatim (config and tensors), for methods that run the source expert itself."""
        prefix = SOURCE_ADAPTER.format(index=index)
        self._dataset(f"{prefix}/adapter_config.json", np.asarray([config_text], dtype=object))
        self._dataset(f"{prefix}/adapter_model.safetensors", np.asarray(safetensors_blob, np.uint8))

    def add_layer_map(self, source: int, pairs: list[tuple[int, int]]) -> None:
        self._dataset(f"layer_maps/source_{source}", np.asarray(pairs, np.int64).reshape(-1, 2))

    def group(self, name: str, role: str, rank: int) -> "_H5GroupSink":
        node = self._file.require_group(f"groups/{name}")
        node.attrs["role"], node.attrs["rank"] = role, rank
        return _H5GroupSink(self, f"groups/{name}")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                attrs = {
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "created_by": self.created_by,
                    "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                }
                self._file.attrs.update(attrs)
                self._file.attrs["checksum"] = combined_checksum(self._hashes, attrs)
            self._file.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


class _H5GroupSink(GroupSink):
    """Streams rows into preallocated HDF5 datasets through a reused buffer, hashing as it goes."""

    BUFFER_ROWS = 1 << 20

    def __init__(self, writer: PlanWriter, prefix: str):
        self.writer, self.prefix = writer, prefix
        self._open: dict[str, list] = {}  # side -> [dataset, hash, buffer, n_buffered, n_written]

    def start_rows(self, side: str, n_rows: int, n_stored: int, rank: int) -> None:
        dset = self.writer._file.create_dataset(f"{self.prefix}/{side}/stored_rows", shape=(n_stored, rank),
                                                dtype=np.float32)
        digest = hashlib.sha256(f"{np.dtype(np.float32).str}|{(n_stored, rank)}|".encode())
        self._open[side] = [dset, digest, np.empty((min(n_stored, self.BUFFER_ROWS), rank), np.float32), 0, 0]

    def add_rows(self, side: str, rows: np.ndarray, stored: bool) -> None:
        if not stored:  # rebuilt from the adapters on reading
            return
        state = self._open[side]
        while len(rows):
            take = min(len(rows), len(state[2]) - state[3])
            state[2][state[3]:state[3] + take] = rows[:take]
            state[3] += take
            rows = rows[take:]
            if state[3] == len(state[2]):
                self._flush(state)

    @staticmethod
    def _flush(state: list) -> None:
        dset, digest, buffer, n, written = state
        if n:
            dset[written:written + n] = buffer[:n]
            digest.update(memoryview(buffer[:n]).cast("B"))
            state[3], state[4] = 0, written + n

    def put(self, name: str, array: np.ndarray) -> None:
        self.writer._dataset(f"{self.prefix}/{name}", array)

    def close(self) -> None:
        for side, state in self._open.items():
            self._flush(state)
            if state[4] != state[0].shape[0]:
                raise RuntimeError(f"{self.prefix}/{side}/stored_rows: {state[4]} of {state[0].shape[0]} rows written")
            digest = state[1].hexdigest()
            state[0].attrs["sha256"] = digest
            self.writer._hashes[f"{self.prefix}/{side}/stored_rows"] = digest
        self._open.clear()
