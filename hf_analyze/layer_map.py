"""Layer maps from target layers to source layers (docs/methods/hypernet-paper.md §1).

A map is a list of ``(target_layer, source_layer)`` pairs in target-layer order.
"""

from __future__ import annotations

import math
from pathlib import Path

from hf_common.errors import ConfigError, InputError
from hf_common.jsonfile import read_json

Pairs = list[tuple[int, int]]
METHODS = ("tail", "proportional")


def tail_map(n_target: int, n_source: int) -> Pairs:
    """``π(ℓ) = ℓ − (L_t − L_s)``: the last layers line up; pairs outside ``[0, L_s)`` are dropped."""
    shift = n_target - n_source
    return [(layer, layer - shift) for layer in range(n_target) if 0 <= layer - shift < n_source]


def proportional_map(n_target: int, n_source: int) -> Pairs:
    """Relative depth: the first and last layers line up, the others by rounding in between."""
    if n_target <= 0 or n_source <= 0:
        return []
    if n_target == 1:
        return [(0, n_source - 1)]
    return [(layer, round(layer * (n_source - 1) / (n_target - 1))) for layer in range(n_target)]


def apply_transfer_ratio(pairs: Pairs, ratio: float) -> Pairs:
    """Keep the last ``max(1, floor(ρ · n))`` of the valid pairs."""
    if not pairs:
        return []
    keep = max(1, math.floor(ratio * len(pairs) + 1e-9))
    return pairs[-keep:]


def _pairs_from_json(value: object, where: str, n_target: int, n_source: int) -> Pairs:
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a list of [target_layer, source_layer] pairs")
    pairs = []
    for item in value:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise InputError(f"{where}: {item!r} is not a [target_layer, source_layer] pair of integers")
        target, source = item
        if not (0 <= target < n_target and 0 <= source < n_source):
            raise InputError(
                f"{where}: pair [{target}, {source}] is out of range (target has {n_target} layers, source {n_source})"
            )
        pairs.append((target, source))
    return sorted(pairs)


def read_map_file(path: Path, n_target: int, source_layers: list[int], source_names: list[str]) -> list[Pairs]:
    """A user map: a list of pairs for every source, or ``{"sources": {INDEX_OR_NAME: pairs}}``."""
    data = read_json(path, what="layer map file")
    if isinstance(data, list):
        return [_pairs_from_json(data, str(path), n_target, n) for n in source_layers]
    if not isinstance(data, dict) or not isinstance(data.get("sources"), dict):
        raise InputError('expected a list of pairs or {"sources": {"0": [[t, s], ...]}}', path)
    maps: list[Pairs] = []
    for index, (name, n_source) in enumerate(zip(source_names, source_layers)):
        entry = data["sources"].get(str(index), data["sources"].get(name))
        if entry is None:
            raise InputError(f"no map for source {index} ({name})", path)
        maps.append(_pairs_from_json(entry, f"{path}: source {index}", n_target, n_source))
    return maps


def build_layer_maps(
    method: str, ratio: float, n_target: int, source_layers: list[int], source_names: list[str]
) -> list[Pairs]:
    """One map per source, with the transfer ratio applied."""
    if method == "tail":
        maps = [tail_map(n_target, n) for n in source_layers]
    elif method == "proportional":
        maps = [proportional_map(n_target, n) for n in source_layers]
    elif method.endswith(".json"):
        maps = read_map_file(Path(method), n_target, source_layers, source_names)
    else:
        raise ConfigError(f"--layer-map must be tail, proportional or a .json file, got {method!r}")
    return [apply_transfer_ratio(pairs, ratio) for pairs in maps]
