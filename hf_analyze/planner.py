"""Plan a fusion: which target modules get which source context (no tensor data read).

``analyze`` opens the adapters (headers only), computes layer maps, splits modules
into functional-role units, links every target unit to the source units at its
mapped layers and groups the target units by (role, rank).  The tensor work
(normalisation, tokens, descriptors) happens in ``materialize`` while the plan is
written, one group at a time, so memory stays at one group's data.
"""

from __future__ import annotations

import filecmp
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hf_common.adapter import Adapter, LoraModule, load_adapter
from hf_common.errors import AdapterFormatError, ConfigError, require_int
from hf_common.normalize import normalize_factors, truncates, unit_rows
from hf_common.plan_writer import GroupSink, MemorySink
from hf_common.registry import ROLES, SplitError

from . import layer_map, tokens

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyzeSettings:
    """Settings of one analysis; validation messages name the command-line flag."""

    block_size: int | str = 4096
    transfer_ratio: float = 1.0
    layer_map: str = "tail"

    def __post_init__(self) -> None:
        require_int("--block-size", self.block_size, 1, 1 << 20, auto=True)
        if not 0.0 < self.transfer_ratio <= 1.0:
            raise ConfigError(f"--transfer-ratio must be in (0, 1], got {self.transfer_ratio}")
        if self.layer_map not in layer_map.METHODS and not self.layer_map.endswith(".json"):
            raise ConfigError(f"--layer-map must be tail, proportional or a .json file, got {self.layer_map!r}")


@dataclass(frozen=True)
class Unit:
    """One functional role of one LoRA module (a fused module gives several units)."""

    module: LoraModule
    layer: int
    role: str
    b_rows: np.ndarray  # rows of the module's B that carry this role

    @property
    def d_out(self) -> int:
        return len(self.b_rows)

    @property
    def label(self) -> str:
        return self.module.path if self.d_out == self.module.d_out else f"{self.module.path} [{self.role}]"


@dataclass(frozen=True)
class SourceUnit:
    source: int  # index into Analysis.sources
    unit: Unit
    target_scale: float
    target_rank: int


@dataclass
class Group:
    role: str
    rank: int
    target_units: list[Unit] = field(default_factory=list)
    source_units: list[SourceUnit] = field(default_factory=list)
    contexts: list[list[int]] = field(default_factory=list)  # per target unit: indices into source_units

    @property
    def name(self) -> str:
        return f"{self.role}.r{self.rank}"


@dataclass
class Analysis:
    settings: AnalyzeSettings
    block_size: int
    target: Adapter
    sources: list[Adapter]
    layer_maps: list[layer_map.Pairs]
    groups: list[Group]
    unmatched: list[dict]
    warnings: list[str]
    licenses: list[dict] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        return bool(self.groups)


def _units(adapter: Adapter, unmatched: list[dict] | None) -> list[Unit]:
    """Split an adapter's modules into role units; record modules that give none."""
    units = []
    for module in adapter.modules.values():
        located = adapter.family.locate(module.path)
        spec = adapter.family.spec_for(located[1]) if located else None
        reason = None
        if located is None:
            reason = "not inside a numbered transformer layer"
        elif spec is None:
            reason = f"no functional role is known for '{located[1]}' in family {adapter.family.name}"
        else:
            try:
                for role, rows in spec.role_rows(module.d_in, module.d_out, adapter.dims):
                    units.append(Unit(module, located[0], role, np.arange(module.d_out) if rows is None else rows))
            except SplitError as exc:
                reason = str(exc)
        if reason and unmatched is not None:
            unmatched.append({"module": module.path, "role": None, "layer": located[0] if located else None,
                              "reason": reason})
    return units


def _extra_reasons(adapter: Adapter) -> list[dict]:
    from hf_common import peft_keys

    seen = {}
    for key in adapter.extra_keys:
        parsed = peft_keys.parse_key(key)
        if parsed.part in (peft_keys.EMBEDDING_A, peft_keys.EMBEDDING_B):
            seen[parsed.module] = "embedding LoRA is carried over unchanged, not fused"
        else:
            seen.setdefault(parsed.module, "not a LoRA A/B pair (modules_to_save or bias); carried over unchanged")
    return [{"module": module, "role": None, "layer": None, "reason": reason} for module, reason in seen.items()]


def resolve_block_size(settings: AnalyzeSettings, units: list[Unit]) -> int:
    if settings.block_size != "auto":
        return int(settings.block_size)
    return tokens.auto_block_size([d for u in units for d in (u.module.d_in, u.d_out)])


def licences_side_by_side(target: Adapter, sources: list[Adapter]) -> list[dict]:
    """Each adapter's licence and base model as its own model card writes them, and its base model folder's licence
    when that folder is on disk.  Never guessed: what is not written down stays None."""
    from hf_common.model_card import gguf_license, read_front_matter

    out = []
    for role, index, adapter in [("target", None, target), *(("source", i, s) for i, s in enumerate(sources))]:
        front = read_front_matter(adapter.folder)
        base = adapter.base_model
        base_front = read_front_matter(Path(base)) if base and Path(base).is_dir() else {}
        base_license = _text(base_front.get("license"))
        if base and base.endswith(".gguf") and Path(base).is_file():  # a GGUF file writes it in its header
            base_license = gguf_license(Path(base))
        out.append({"role": role, "index": index, "adapter": str(adapter.folder),
                    "license": _text(front.get("license")), "card_base_model": _text(front.get("base_model")),
                    "base_model": base, "base_model_license": base_license})
    return out


def _text(value) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and str(value).strip() else None


def _same_adapter(a: Adapter, b: Adapter) -> bool:
    """Same folder, or byte-identical weights (``filecmp`` compares sizes first, then streams the bytes)."""
    return a.folder.resolve() == b.folder.resolve() or filecmp.cmp(a.weights_path, b.weights_path, shallow=False)


def _duplicates(target: Adapter, sources: list[Adapter]) -> list[str]:
    """Warnings for a source that is the target itself, or another source again (same tensors)."""
    out = []
    for index, source in enumerate(sources):
        if _same_adapter(source, target):
            out.append(f"source {index} ({source.folder}) is the target adapter itself (same tensors): it brings no "
                       "other expert's knowledge")
        for earlier in range(index):
            if _same_adapter(source, sources[earlier]):
                out.append(f"source {index} ({source.folder}) is source {earlier} again (same tensors)")
                break
    return out


def analyze(target_dir: str | Path, source_dirs: list[str | Path], settings: AnalyzeSettings) -> Analysis:
    """Open every adapter and decide where fusion can happen."""
    target = load_adapter(target_dir)
    sources = [load_adapter(path) for path in source_dirs]
    warnings = [w for adapter in (target, *sources) for w in adapter.warnings]
    warnings += _duplicates(target, sources)
    licenses = licences_side_by_side(target, sources)
    distinct = sorted({value for entry in licenses for value in (entry["license"], entry["base_model_license"]) if value})
    if len(distinct) > 1:
        warnings.append(f"the inputs' licences differ ({', '.join(distinct)}): check that they allow this fusion")
    unmatched: list[dict] = []
    target_units = _units(target, unmatched)
    unmatched.extend(_extra_reasons(target))
    for index, source in enumerate(sources):
        ignored = len(source.extra_keys)
        skipped: list[dict] = []
        _units(source, skipped)
        if ignored or skipped:
            warnings.append(f"source {index} ({source.folder}): {len(skipped)} modules without a role and "
                            f"{ignored} non-LoRA-pair tensors are ignored")

    maps = layer_map.build_layer_maps(
        settings.layer_map, settings.transfer_ratio, target.n_layers,
        [s.n_layers for s in sources], [s.folder.name for s in sources],
    )
    by_layer_role: dict[tuple[int, int, str], list[Unit]] = defaultdict(list)
    source_roles: set[str] = set()
    for index, source in enumerate(sources):
        for unit in _units(source, None):
            by_layer_role[(index, unit.layer, unit.role)].append(unit)
            source_roles.add(unit.role)
    mapped = [defaultdict(list) for _ in sources]
    for index, pairs in enumerate(maps):
        for t_layer, s_layer in pairs:
            mapped[index][t_layer].append(s_layer)

    groups: dict[tuple[str, int], Group] = {}
    source_index: dict[tuple, int] = {}
    for unit in target_units:
        links = [
            (index, s_unit)
            for index in range(len(sources))
            for s_layer in mapped[index].get(unit.layer, [])
            for s_unit in by_layer_role.get((index, s_layer, unit.role), [])
        ]
        if not links:
            unmatched.append({"module": unit.label, "role": unit.role, "layer": unit.layer,
                              "reason": _why_unmatched(unit, source_roles, mapped)})
            continue
        group = groups.setdefault((unit.role, unit.module.rank), Group(unit.role, unit.module.rank))
        context = []
        for index, s_unit in links:
            key = (group.name, index, s_unit.module.path, s_unit.role, unit.module.scale)
            if key not in source_index:
                source_index[key] = len(group.source_units)
                group.source_units.append(SourceUnit(index, s_unit, unit.module.scale, unit.module.rank))
            context.append(source_index[key])
        group.target_units.append(unit)
        group.contexts.append(context)

    ordered = sorted(groups.values(), key=lambda g: (ROLES.index(g.role) if g.role in ROLES else len(ROLES), g.rank))
    block_size = resolve_block_size(settings, target_units)
    for source_index_, (source, pairs) in enumerate(zip(sources, maps)):
        if not pairs:
            warnings.append(f"source {source_index_} ({source.folder}): its layer map is empty, it contributes nothing")
    return Analysis(settings, block_size, target, sources, maps, ordered, unmatched, warnings, licenses)


def _why_unmatched(unit: Unit, source_roles: set[str], mapped: list[dict]) -> str:
    if unit.role not in source_roles:
        return f"no source adapter has a {unit.role} module"
    if not any(unit.layer in m for m in mapped):
        return "the layer is outside every source's layer map"
    return f"no source has {unit.role} at the source layer(s) mapped to this layer"


def _take_rows(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]``, as a view when the rows are one contiguous run (the common, unfused case)."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (len(rows) == 1 or (np.diff(rows) == 1).all()):
        return matrix[rows[0]:rows[-1] + 1]
    return matrix[rows]


def _stream_side(sink: GroupSink, side: str, units: list[Unit], factors, rank: int, block_size: int, stored) -> None:
    """One side's rows unit by unit (those ``stored(index)`` to be kept in the plan), then its token tables and
    descriptors."""
    sink.start_rows(side, sum(u.module.d_in + u.d_out for u in units),
                    sum(u.module.d_in + u.d_out for i, u in enumerate(units) if stored(i)), rank)
    offsets, token_unit, starts, lengths, is_b, descs = [0], [], [], [], [], []
    for index, unit in enumerate(units):
        rows = factors(index)
        ranges = tokens.token_ranges(unit.module.d_in, unit.d_out, block_size)
        descs.append(tokens.descriptors(rows, ranges))
        for start, length, b_part in ranges:
            token_unit.append(index)
            starts.append(offsets[-1] + start)
            lengths.append(length)
            is_b.append(b_part)
        offsets.append(offsets[-1] + rows.shape[0])
        sink.add_rows(side, rows, stored(index))
    sink.put(f"{side}/unit_row_offset", np.asarray(offsets, np.int64))
    sink.put(f"{side}/unit_d_in", np.asarray([u.module.d_in for u in units], np.int64))
    sink.put(f"{side}/unit_d_out", np.asarray([u.d_out for u in units], np.int64))
    sink.put(f"{side}/unit_layer", np.asarray([u.layer for u in units], np.int64))
    sink.put(f"{side}/unit_module", np.asarray([u.module.path for u in units], dtype=object))
    sink.put(f"{side}/token_unit", np.asarray(token_unit, np.int64))
    sink.put(f"{side}/token_row_start", np.asarray(starts, np.int64))
    sink.put(f"{side}/token_n_rows", np.asarray(lengths, np.int64))
    sink.put(f"{side}/token_is_b", np.asarray(is_b, np.bool_))
    sink.put(f"{side}/descriptors", np.concatenate(descs) if descs else np.zeros((0, rank), np.float32))


def materialize(analysis: Analysis, group: Group, sink: GroupSink) -> None:
    """Read, normalise and tokenise one group's factors into ``sink``."""
    bs = analysis.block_size

    def target_rows(index: int) -> np.ndarray:
        unit = group.target_units[index]
        a, b = analysis.target.factors(unit.module)
        return unit_rows(a, _take_rows(b, unit.b_rows))

    methods = []

    def source_rows(index: int) -> np.ndarray:
        s_unit = group.source_units[index]
        source = analysis.sources[s_unit.source]
        a, b = source.factors(s_unit.unit.module)
        try:
            a_n, b_n, method = normalize_factors(
                a, _take_rows(b, s_unit.unit.b_rows), s_unit.unit.module.scale, s_unit.target_scale, s_unit.target_rank
            )
        except AdapterFormatError as exc:  # name the file and the module
            raise AdapterFormatError(f"module {s_unit.unit.module.path!r}: {exc.message}", source.folder) from None
        methods.append(method)
        return unit_rows(a_n, b_n)

    # the plan keeps only the rows it cannot rebuild from the adapters it holds: those of a source of higher rank,
    # brought to the target's by a truncated SVD (its bits depend on the LAPACK that computed it)
    _stream_side(sink, "target", group.target_units, target_rows, group.rank, bs, lambda index: False)
    sink.put("target/unit_key_a", np.asarray([u.module.a_key for u in group.target_units], dtype=object))
    sink.put("target/unit_key_b", np.asarray([u.module.b_key for u in group.target_units], dtype=object))
    sink.put("target/unit_scale", np.asarray([u.module.scale for u in group.target_units], np.float64))
    sink.put("target/unit_b_rows", np.concatenate([u.b_rows for u in group.target_units]).astype(np.int64))
    _stream_side(sink, "source", [s.unit for s in group.source_units], source_rows, group.rank, bs,
                 lambda index: truncates(group.source_units[index].unit.module.rank, group.source_units[index].target_rank))
    sink.put("source/unit_key_a", np.asarray([s.unit.module.a_key for s in group.source_units], dtype=object))
    sink.put("source/unit_key_b", np.asarray([s.unit.module.b_key for s in group.source_units], dtype=object))
    sink.put("source/unit_b_rows", np.concatenate([np.zeros(0, np.int64)] + [s.unit.b_rows for s in group.source_units])
             .astype(np.int64))
    sink.put("source/unit_source", np.asarray([s.source for s in group.source_units], np.int64))
    sink.put("source/unit_original_rank", np.asarray([s.unit.module.rank for s in group.source_units], np.int64))
    sink.put("source/unit_scale_ratio",
             np.asarray([s.unit.module.scale / s.target_scale for s in group.source_units], np.float64))
    sink.put("source/unit_rank_method", np.asarray(methods, dtype=object))
    sink.put("context_offset", np.cumsum([0] + [len(c) for c in group.contexts]).astype(np.int64))
    sink.put("context_source_unit", np.asarray([i for c in group.contexts for i in c], np.int64))


def materialize_arrays(analysis: Analysis, group: Group) -> dict[str, np.ndarray]:
    """One group's plan arrays in memory."""
    sink = MemorySink()
    materialize(analysis, group, sink)
    return sink.arrays
