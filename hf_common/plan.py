"""The fusion plan: one self-contained, versioned, checksummed HDF5 file.

Layout (documented for users in ``docs/plan-format.md``)::

    /                 attrs: format, format_version, created_by, created_at, block_size, checksum
    /meta             text datasets: settings, provenance, report (JSON), target_config (adapter_config.json)
    /target_adapter   adapter_model.safetensors: the target's tensors as one safetensors file (uint8)
    /source_adapters  source_<k>/adapter_config.json, source_<k>/adapter_model.safetensors: each source verbatim
    /layer_maps       source_<k>: int64 (n, 2) pairs [target_layer, source_layer]
    /groups/<name>    attrs role, rank; target/*, source/*, context_offset, context_source_unit

A group's token rows ``[Aᵀ; B]`` per unit are rebuilt on reading from the adapters the plan holds (format
version 2); only the rows that cannot be rebuilt bit for bit everywhere, a higher-rank source's truncated SVD,
are stored (``source/stored_rows``).  Version 1 plans stored every row (``target/rows``, ``source/rows``) and
are still read.

Every dataset carries a ``sha256`` attribute of its contents; the root ``checksum``
is the sha256 of all of them (sorted by path), so any change to any byte is found.
Plans are written to a temporary name and renamed only once complete (``hf_common.plan_writer``); this module
reads and validates them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FileAccessError, PlanFormatError, PlanVersionError
from .safetensors_io import SafetensorsFile

FORMAT_NAME = "heterofusion-plan"
FORMAT_VERSION = 2
TARGET_BLOB = "target_adapter/adapter_model.safetensors"
SOURCE_ADAPTER = "source_adapters/source_{index}"  # + "/adapter_config.json" (text), "/adapter_model.safetensors"
META_TEXTS = ("settings", "provenance", "report", "target_config")
_COMMON_ARRAYS = (
    "target/unit_row_offset", "target/unit_d_in", "target/unit_d_out", "target/unit_layer",
    "target/unit_module", "target/unit_key_a", "target/unit_key_b", "target/unit_scale", "target/unit_b_rows",
    "target/token_unit", "target/token_row_start", "target/token_n_rows", "target/token_is_b", "target/descriptors",
    "source/unit_row_offset", "source/unit_d_in", "source/unit_d_out", "source/unit_layer",
    "source/unit_module", "source/unit_source", "source/unit_original_rank", "source/unit_scale_ratio",
    "source/unit_rank_method", "source/token_unit", "source/token_row_start", "source/token_n_rows",
    "source/token_is_b", "source/descriptors", "context_offset", "context_source_unit",
)
GROUP_ARRAYS = {  # per format version: what every group holds
    1: ("target/rows", "source/rows", *_COMMON_ARRAYS),
    2: ("target/stored_rows", "source/stored_rows", "source/unit_key_a", "source/unit_key_b", "source/unit_b_rows",
        *_COMMON_ARRAYS),
}


def h5py_module():
    import h5py

    return h5py


def dataset_digest(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    if array.dtype.kind == "O":
        for item in array.reshape(-1):
            value = item.decode() if isinstance(item, bytes) else str(item)
            digest.update(value.encode() + b"\0")
    elif array.size:  # an empty array (a target's stored rows) is its dtype and shape alone
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def combined_checksum(hashes: dict[str, str], attrs: dict[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(attrs, sort_keys=True, default=str).encode())
    for path in sorted(hashes):
        digest.update(f"{path}={hashes[path]}\n".encode())
    return digest.hexdigest()


@dataclass
class PlanGroup:
    name: str
    role: str
    rank: int
    _node: object
    _plan: "Plan | None" = None

    def array(self, key: str) -> np.ndarray:
        """A stored array; ``target/rows`` and ``source/rows`` (every unit's ``[Aᵀ; B]``, float32) also from a
        version 2 plan, which rebuilds them from the adapters it holds."""
        if key in ("target/rows", "source/rows") and key not in self._node and self._plan is not None:
            return self._plan.rows(self, key.partition("/")[0])
        data = self._node[key]
        if h5py_module().check_string_dtype(data.dtype):
            return np.asarray(data.asstr()[()], dtype=object)
        return data[()]


class Plan:
    """A validated plan opened read-only.  Use as a context manager or call ``close``."""

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        self.path = Path(path)
        self._adapters: dict[object, SafetensorsFile] = {}  # adapters read back for rebuilding rows
        h5py = h5py_module()
        if not self.path.is_file():
            raise FileAccessError("plan file not found", self.path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise PlanFormatError(f"not a readable HDF5 plan ({exc})", self.path) from None
        try:
            self._validate(verify)
        except PlanFormatError:
            self._file.close()
            raise
        except (KeyError, ValueError, TypeError, OSError) as exc:  # includes a damaged target blob
            self._file.close()
            raise PlanFormatError(f"damaged or incomplete plan ({exc})", self.path) from None

    def _validate(self, verify: bool) -> None:
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT_NAME:
            raise PlanFormatError(f"not a fusion plan (format attribute is {attrs.get('format')!r})", self.path)
        version = int(attrs.get("format_version", -1))
        if version > FORMAT_VERSION or version < 1:
            raise PlanVersionError(
                f"plan format version {version} is not supported (this heterofusion reads version {FORMAT_VERSION}); "
                "upgrade heterofusion or re-run hf-analyze", self.path)
        for name in [f"meta/{n}" for n in META_TEXTS] + [TARGET_BLOB]:
            if name not in self._file:
                raise PlanFormatError(f"missing /{name}", self.path)
        self.version = version
        self.checksum = str(attrs["checksum"])
        self.settings = json.loads(self.text("settings"))
        self.provenance = json.loads(self.text("provenance"))
        self.report = json.loads(self.text("report"))
        self.target_config = json.loads(self.text("target_config"))
        self.block_size = int(self.settings["block_size"])
        self.groups = []
        stored = self._file.get("groups", {})
        names = [g["name"] for g in self.report["groups"]]  # the analysis order, not HDF5's alphabetical one
        if sorted(names) != sorted(stored):
            raise PlanFormatError("the groups stored differ from the groups in the report", self.path)
        for name in names:
            node = stored[name]
            missing = [key for key in GROUP_ARRAYS[version] if key not in node]
            if missing:
                raise PlanFormatError(f"group {name} lacks {', '.join(missing)}", self.path)
            group = PlanGroup(name, str(node.attrs["role"]), int(node.attrs["rank"]), node, self)
            for side in ("target", "source"):
                rows = node[f"{side}/rows" if version == 1 else f"{side}/stored_rows"]
                n_units = node[f"{side}/unit_d_in"].shape[0]
                if rows.ndim != 2 or rows.shape[1] != group.rank or node[f"{side}/unit_row_offset"].shape != (n_units + 1,):
                    raise PlanFormatError(f"group {name}: {side} arrays have inconsistent shapes", self.path)
            self.groups.append(group)
        if verify:
            self.verify()

    def verify(self) -> None:
        """Recompute every dataset's sha256 and the root checksum."""
        hashes = {}

        def visit(path: str, node: object) -> None:
            if isinstance(node, h5py_module().Dataset):
                group = PlanGroup("", "", 0, self._file)
                digest = dataset_digest(group.array(path))
                if digest != node.attrs.get("sha256"):
                    raise PlanFormatError(f"checksum mismatch in /{path}: the plan is damaged", self.path)
                hashes[path] = digest

        self._file.visititems(visit)
        attrs = {k: self._file.attrs[k] for k in ("format", "format_version", "created_by", "created_at")}
        attrs = {k: (int(v) if k == "format_version" else str(v)) for k, v in attrs.items()}
        if combined_checksum(hashes, attrs) != self.checksum:
            raise PlanFormatError("plan checksum mismatch (datasets added, removed or renamed)", self.path)

    def rows(self, group: PlanGroup, side: str, target=None) -> np.ndarray:
        """Every unit's rows ``[Aᵀ; B]`` of one side of ``group`` (float32, ``(n_rows, rank)``), rebuilt from the
        adapters the plan holds as hf-analyze built them; the stored rows where a truncated SVD made them.
        ``target``: other target tensors to read instead (anything with ``float32(key)``; a pipeline's later task
        starts from the earlier one's output), for a plan of either version."""
        from .normalize import rebuild_rows

        a = group.array
        if side == "target":
            if target is None:
                if "target" not in self._adapters:  # each adapter read from the file once, not per group and side
                    self._adapters["target"] = self.target_safetensors()
                target = self._adapters["target"]
            files, which = {0: target}, np.zeros(len(a("target/unit_d_out")), np.int64)
            methods = ratios = None
            stored = np.zeros((0, group.rank), np.float32)  # a target's rows are never stored
        else:
            which, methods, ratios = a("source/unit_source"), a("source/unit_rank_method"), a("source/unit_scale_ratio")
            for i in set(which.tolist()):
                if i not in self._adapters:
                    self._adapters[i] = self.source_adapter(int(i))[1]
            files = {int(i): self._adapters[int(i)] for i in set(which.tolist())}
            stored = a("source/stored_rows")
        try:
            return rebuild_rows(files, which, a(f"{side}/unit_key_a"), a(f"{side}/unit_key_b"), a(f"{side}/unit_b_rows"),
                                a(f"{side}/unit_d_out"), a(f"{side}/unit_row_offset"), stored, group.rank, methods,
                                ratios)
        except (KeyError, ValueError) as exc:
            raise PlanFormatError(f"group {group.name}: its {side} rows cannot be rebuilt ({exc})", self.path) from None

    def config_text(self) -> str | None:
        """The hf-analyze options that wrote this plan, as YAML (plans from before 0.2 have none)."""
        return self.text("config") if "meta/config" in self._file else None

    def text(self, name: str) -> str:
        return self._file[f"meta/{name}"].asstr()[0]

    def layer_map(self, source: int) -> np.ndarray:
        return self._file[f"layer_maps/source_{source}"][()]

    def target_safetensors(self) -> SafetensorsFile:
        """The target adapter's tensors (a safetensors file held in the plan)."""
        return SafetensorsFile(f"{self.path}:/{TARGET_BLOB}", data=self._file[TARGET_BLOB][()])

    def check_target_tensors(self) -> None:
        """The target adapter held in the plan has the rank and widths its groups were built for (a plan whose
        target was swapped for another adapter, checksums recomputed, is refused here)."""
        tensors = self.target_safetensors()
        keys = set(tensors.keys())
        for group in self.groups:
            a = group.array
            for key_a, key_b, d_in in zip(a("target/unit_key_a"), a("target/unit_key_b"), a("target/unit_d_in")):
                for key, expected in ((str(key_a), (group.rank, int(d_in))), (str(key_b), None)):
                    if key not in keys:
                        raise PlanFormatError(f"group {group.name}: the plan's target adapter has no tensor {key!r}", self.path)
                    shape = tensors.shape(key)
                    if (expected and shape != expected) or (expected is None and shape[1:] != (group.rank,)):
                        raise PlanFormatError(f"group {group.name}: the plan's target tensor {key!r} is {list(shape)}, but "
                                              f"the group was built for rank {group.rank}", self.path)

    @property
    def n_sources(self) -> int:
        return sum(1 for entry in self.provenance["inputs"] if entry["role"] == "source")

    def source_adapter(self, index: int) -> tuple[dict, SafetensorsFile]:
        """Source ``index``'s adapter config and tensors, as stored in the plan."""
        prefix = SOURCE_ADAPTER.format(index=index)
        if f"{prefix}/adapter_model.safetensors" not in self._file:
            raise PlanFormatError(f"the plan holds no copy of source adapter {index} (plans written before "
                                  "heterofusion 0.2 do not); re-run hf-analyze", self.path)
        config = json.loads(self._file[f"{prefix}/adapter_config.json"].asstr()[0])
        blob = self._file[f"{prefix}/adapter_model.safetensors"][()]
        return config, SafetensorsFile(f"{self.path}:/{prefix}/adapter_model.safetensors", data=blob)

    def target_tensors(self) -> dict[str, tuple[np.ndarray, str]]:
        """Every tensor of the target adapter, as stored: ``key -> (array, safetensors dtype)``."""
        tensors = self.target_safetensors()
        return {key: (tensors.raw(key), tensors.dtype(key)) for key in tensors.keys()}

    def close(self) -> None:
        self._adapters = {}
        self._file.close()

    def __enter__(self) -> "Plan":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
