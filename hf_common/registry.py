"""Model families as data.

Each ``families/*.json`` file names a family's layer containers (``model.layers``,
``transformer.h``...) and maps its LoRA-able module suffixes to functional roles.
A fused module (``qkv_proj``, ``c_attn``, ``query_key_value``...) lists its parts
and the row layout of its output, so that it can be split into roles.  Roles use
the Llama names, the lingua franca of PEFT users.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources

import numpy as np

from .errors import UnsupportedAdapterError

ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Hugging Face configs spell the same quantity differently across families.
_CONFIG_ALIASES = {
    "n_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "n_heads": ("num_attention_heads", "n_head"),
    "n_kv_heads": ("num_key_value_heads", "num_kv_heads"),
    "head_dim": ("head_dim",),
}


class SplitError(Exception):
    """A fused module cannot be split into roles; the message is the reason shown to users."""


@dataclass(frozen=True)
class ModelDims:
    """What a model's config.json says about its shape (every field may be unknown)."""

    n_layers: int | None = None
    hidden: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    flags: frozenset[str] = frozenset()  # boolean config switches that are true

    @classmethod
    def from_config(cls, config: dict | None) -> "ModelDims":
        if not config:
            return cls()
        source = dict(config)
        if isinstance(config.get("text_config"), dict):  # multimodal wrappers (Gemma 3)
            source.update(config["text_config"])
        values = {}
        for name, aliases in _CONFIG_ALIASES.items():
            found = next(((a, source[a]) for a in aliases if isinstance(source.get(a), int) and not isinstance(source[a], bool)),
                         None)
            if found and found[1] <= 0:  # a broken config must be named as the problem, not read as "nothing matches"
                raise ValueError(f"the base model's config.json says {found[0]} = {found[1]}; it must be a positive number")
            values[name] = int(found[1]) if found else None
        flags = frozenset(k for k, v in source.items() if v is True)
        if values["n_kv_heads"] is None and "multi_query" in flags:
            values["n_kv_heads"] = 1
        if values["n_kv_heads"] is None:
            values["n_kv_heads"] = values["n_heads"]
        if values["head_dim"] is None and values["hidden"] and values["n_heads"]:
            values["head_dim"] = values["hidden"] // values["n_heads"]
        return cls(flags=flags, **values)


@dataclass(frozen=True)
class ModuleSpec:
    suffix: str
    parts: tuple[tuple[str, str], ...]  # (role, size token) in output-row order
    layout: str = "single"  # single | concat | interleaved_heads | grouped_kv
    layout_if_config: tuple[tuple[str, str], ...] = ()

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(role for role, _ in self.parts)

    def role_rows(self, d_in: int, d_out: int, dims: ModelDims) -> list[tuple[str, np.ndarray | None]]:
        """Output rows of B that belong to each role (``None``: all rows)."""
        if self.layout == "single":
            return [(self.parts[0][0], None)]
        layout = self._layout_for(dims)
        if layout == "concat":
            sizes = self._concat_sizes(d_in, d_out, dims)
            bounds = np.cumsum([0, *sizes])
            return [(role, np.arange(bounds[i], bounds[i + 1])) for i, (role, _) in enumerate(self.parts)]
        if not dims.n_heads:
            raise SplitError(f"{self.suffix} interleaves heads; its model's config.json (num_attention_heads) is needed")
        if layout == "interleaved_heads":
            if d_out % (len(self.parts) * dims.n_heads):
                raise SplitError(f"{self.suffix}: {d_out} output rows do not split into {dims.n_heads} heads")
            head = d_out // (len(self.parts) * dims.n_heads)
            per_head = np.arange(head)
            return [
                (role, np.concatenate([h * len(self.parts) * head + j * head + per_head for h in range(dims.n_heads)]))
                for j, (role, _) in enumerate(self.parts)
            ]
        if layout == "grouped_kv":
            n_kv = dims.n_kv_heads or 1
            q_per = dims.n_heads // n_kv
            if d_out % (n_kv * (q_per + 2)):
                raise SplitError(f"{self.suffix}: {d_out} output rows do not fit {dims.n_heads} heads / {n_kv} KV heads")
            head = d_out // (n_kv * (q_per + 2))
            group = (q_per + 2) * head
            q = np.concatenate([g * group + np.arange(q_per * head) for g in range(n_kv)])
            k = np.concatenate([g * group + q_per * head + np.arange(head) for g in range(n_kv)])
            return [("q_proj", q), ("k_proj", k), ("v_proj", k + head)]
        raise SplitError(f"{self.suffix}: unknown layout {layout!r} in the family registry")

    def _layout_for(self, dims: ModelDims) -> str:
        if not self.layout_if_config or not dims.flags and dims.n_heads is None:
            return self.layout
        for flag, layout in self.layout_if_config:
            if flag == "_default" or flag in dims.flags:
                return layout
        return self.layout

    def _concat_sizes(self, d_in: int, d_out: int, dims: ModelDims) -> list[int]:
        known_q = dims.n_heads * dims.head_dim if dims.n_heads and dims.head_dim else None
        known_kv = dims.n_kv_heads * dims.head_dim if dims.n_kv_heads and dims.head_dim else None
        tokens = [size for _, size in self.parts]
        q = known_q or d_in  # without a config: the query width equals the hidden size
        n_kv = tokens.count("kv")
        kv = known_kv or ((d_out - q * tokens.count("q")) // n_kv if n_kv else 0)
        sizes = [{"q": q, "kv": kv, "equal": d_out // len(tokens)}[t] for t in tokens]
        if sum(sizes) != d_out or min(sizes) <= 0:
            raise SplitError(f"{self.suffix}: cannot split {d_out} output rows into {', '.join(self.roles)}")
        return sizes


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    name_hints: tuple[str, ...]
    layer_containers: tuple[str, ...]
    modules: dict[str, ModuleSpec] = field(hash=False)

    def locate(self, module_path: str) -> tuple[int, str] | None:
        """``(layer, suffix)`` of a module path such as ``model.layers.3.self_attn.q_proj``."""
        match = _layer_regex(self.layer_containers).search(module_path)
        return (int(match.group(1)), match.group(2)) if match else None

    def spec_for(self, suffix: str) -> ModuleSpec | None:
        return self.modules.get(suffix)


@cache
def _layer_regex(containers: tuple[str, ...]) -> re.Pattern[str]:
    last = sorted({c.rsplit(".", 1)[-1] for c in containers})
    return re.compile(r"(?:^|\.)(?:" + "|".join(map(re.escape, last)) + r")\.(\d+)\.(.+)$")


def _spec(suffix: str, raw: str | dict) -> ModuleSpec:
    if isinstance(raw, str):
        return ModuleSpec(suffix, ((raw, "all"),))
    return ModuleSpec(
        suffix,
        tuple((role, size) for role, size in raw["parts"]),
        raw["layout"],
        tuple(raw.get("layout_if_config", {}).items()),
    )


@lru_cache(maxsize=1)
def families() -> dict[str, Family]:
    """Every family in ``hf_common/families``, by name."""
    result = {}
    for entry in sorted(resources.files("hf_common.families").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text())
        result[data["name"]] = Family(
            name=data["name"],
            description=data["description"],
            model_types=tuple(data["model_types"]),
            architectures=tuple(data["architectures"]),
            name_hints=tuple(data["name_hints"]),
            layer_containers=tuple(data["layer_containers"]),
            modules={suffix: _spec(suffix, raw) for suffix, raw in data["modules"].items()},
        )
    return result


def detect_family(adapter_config: dict, model_config: dict | None, module_paths: list[str], where: str) -> tuple[Family, str]:
    """Pick the family of an adapter; returns it with a short note of how it was decided."""
    known = families()
    model_type = (model_config or {}).get("model_type")
    for family in known.values():
        if model_type in family.model_types:
            return family, f"config.json model_type {model_type!r}"
    base_class = (adapter_config.get("auto_mapping") or {}).get("base_model_class")
    for family in known.values():
        if base_class in family.architectures:
            return family, f"adapter_config auto_mapping {base_class}"
    name = str(adapter_config.get("base_model_name_or_path") or "").lower()
    hits = [(len(hint), family) for family in known.values() for hint in family.name_hints if hint in name]
    if hits:
        return max(hits, key=lambda hit: hit[0])[1], "base model name"
    scores = []
    for family in known.values():
        located = [family.locate(path) for path in module_paths]
        scores.append((sum(1 for loc in located if loc and loc[1] in family.modules), family))
    best = max(score for score, _ in scores)
    if best == 0:
        raise UnsupportedAdapterError(
            f"cannot tell the model family: no known family ({', '.join(known)}) has modules named like "
            f"{module_paths[0] if module_paths else '(no LoRA modules)'}",
            where,
        )
    family = next(family for score, family in scores if score == best)
    return family, "module names"
