"""Read and validate PEFT LoRA adapter folders (safetensors without torch, ``.bin`` with it).

Shapes and config are validated when the folder is opened (header only); values
are read lazily, module by module, and checked to be finite when read.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import peft_keys
from .errors import AdapterFormatError, FileAccessError, UnsupportedAdapterError, one_line
from .jsonfile import read_json
from .registry import Family, ModelDims, detect_family
from .safetensors_io import FLOAT_DTYPES, SafetensorsFile, all_finite, to_float32

logger = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-adapted linear module: ``ΔW = scale · B @ A``."""

    path: str  # normalised module path
    a_key: str
    b_key: str
    rank: int
    d_in: int
    d_out: int
    alpha: float
    scale: float


@dataclass
class Adapter:
    folder: Path
    config: dict
    weights_path: Path
    tensors: "SafetensorsFile | TorchBinFile"
    modules: dict[str, LoraModule]
    extra_keys: list[str]  # tensors that are not LoRA A/B pairs (embedding LoRA, modules_to_save...)
    model_config: dict | None
    family: Family
    family_note: str
    dims: ModelDims
    n_layers: int
    n_layers_note: str
    warnings: list[str] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def lora_alpha(self) -> float:
        return float(self.config["lora_alpha"])

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def files(self) -> list[Path]:
        return [self.folder / CONFIG_NAME, self.weights_path]

    def factors(self, module: LoraModule) -> tuple[np.ndarray, np.ndarray]:
        """``(A, B)`` as float32 arrays, checked to be finite."""
        return self.float32(module.a_key), self.float32(module.b_key)

    def float32(self, key: str) -> np.ndarray:
        array = self.tensors.float32(key)
        if not all_finite(array):
            bad = int(array.size - np.isfinite(array).sum())
            raise AdapterFormatError(f"tensor {key!r} has {bad} non-finite values (NaN or inf)", self.weights_path)
        return array

    def raw(self, key: str) -> tuple[np.ndarray, str]:
        """A tensor as stored, with its safetensors dtype name (BF16 as uint16 bits)."""
        return self.tensors.raw(key), self.tensors.dtype(key)


class TorchBinFile:
    """Legacy ``adapter_model.bin``: needs torch, loaded with ``weights_only=True``."""

    def __init__(self, path: Path):
        try:
            import torch
        except ImportError:
            raise UnsupportedAdapterError(
                "reading a legacy .bin adapter needs PyTorch (pip install 'heterofusion[fuse]'), "
                "or convert it to adapter_model.safetensors",
                path,
            ) from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a corrupt pickle/zip
            raise AdapterFormatError(f"cannot read PyTorch weights ({type(exc).__name__}: {one_line(exc)})", path) from None
        if not isinstance(state, dict):
            raise AdapterFormatError("PyTorch weights are not a state dict", path)
        names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
        self._arrays: dict[str, tuple[np.ndarray, str]] = {}
        for key, tensor in state.items():
            if not isinstance(tensor, torch.Tensor):
                raise AdapterFormatError(f"entry {key!r} is not a tensor", path)
            dtype = names.get(tensor.dtype, str(tensor.dtype))
            array = tensor.view(torch.int16).numpy().view(np.uint16) if dtype == "BF16" else tensor.numpy()
            self._arrays[key] = (array, dtype)

    def keys(self) -> list[str]:
        return list(self._arrays)

    def dtype(self, key: str) -> str:
        return self._arrays[key][1]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._arrays[key][0].shape)

    def raw(self, key: str) -> np.ndarray:
        return self._arrays[key][0]

    def float32(self, key: str) -> np.ndarray:
        return to_float32(*self._arrays[key])


def _read_json(path: Path) -> dict:
    data = read_json(path, error=AdapterFormatError)
    if not isinstance(data, dict):
        raise AdapterFormatError("expected a JSON object", path)
    return data


def pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches a module path's tail."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def lora_scale(config: dict, module: str, rank: int) -> tuple[float, float]:
    """``(alpha, scale)`` of one module as PEFT resolves them: ``alpha_pattern`` first, ``alpha / r`` or, with rsLoRA,
    ``alpha / sqrt(r)``."""
    alpha = float(pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"]))
    return alpha, alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_config(config: dict, path: Path) -> None:
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UnsupportedAdapterError(f"only LoRA adapters can be fused, this is a {peft_type} adapter", path)
    if config.get("use_dora"):
        raise UnsupportedAdapterError(
            "DoRA adapters (use_dora=true) are not supported: their magnitude vector has no counterpart in LoRA fusion", path
        )
    for feature in ("layer_replication", "target_parameters"):
        if config.get(feature):
            raise UnsupportedAdapterError(f"LoRA with {feature} is not supported", path)
    for name in ("r", "lora_alpha"):
        value = config.get(name)
        if not _positive_number(value):
            raise AdapterFormatError(f"{name!r} must be a positive number, found {value!r}", path)
    for name, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        patterns = config.get(name)
        if patterns is None:
            continue
        if not isinstance(patterns, dict):
            raise AdapterFormatError(f"{name!r} must be an object of module pattern -> number, found {type(patterns).__name__}",
                                     path)
        for pattern, value in patterns.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise AdapterFormatError(f"{name!r}: {pattern!r} is not a valid pattern ({exc})", path) from None
            if not _positive_number(value) or (integer and value != int(value)):
                kind = "a positive whole number" if integer else "a positive number"
                raise AdapterFormatError(f"{name!r}: the value for {pattern!r} must be {kind}, found {value!r}", path)


def _find_model_config(folder: Path, config: dict) -> dict | None:
    """The base model's config.json, where it is on local disk."""
    base = config.get("base_model_name_or_path")
    candidates = [Path(base) / "config.json"] if base else []
    for candidate in candidates:
        try:
            if candidate.is_file():
                return json.loads(candidate.read_text())
        except (OSError, ValueError):
            logger.debug("ignoring unreadable model config %s", candidate)
    return None


def _check_layer_consistency(modules: dict[str, LoraModule], family: Family, where: Path) -> None:
    """The same module in every layer of a transformer has the same shape; an outlier is a broken file."""
    shapes: dict[str, Counter] = {}
    for module in modules.values():
        located = family.locate(module.path)
        if located:
            shapes.setdefault(located[1], Counter())[(module.d_in, module.d_out)] += 1
    for module in modules.values():
        located = family.locate(module.path)
        if located and len(shapes[located[1]]) > 1:
            (d_in, d_out), _ = shapes[located[1]].most_common(1)[0]
            if (module.d_in, module.d_out) != (d_in, d_out):
                raise AdapterFormatError(
                    f"module {module.path!r}: lora_A is {module.rank} x {module.d_in} and lora_B {module.d_out} x "
                    f"{module.rank}, but {located[1]} is {d_in} -> {d_out} in the other layers", where)


def load_adapter(folder: str | Path) -> Adapter:
    """Open and validate a PEFT LoRA adapter folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileAccessError("no such adapter folder" if not folder.exists() else "not a folder", folder)
    config = _read_json(folder / CONFIG_NAME)
    _check_config(config, folder / CONFIG_NAME)
    weights_path = next((folder / name for name in WEIGHT_NAMES if (folder / name).is_file()), None)
    if weights_path is None:
        raise FileAccessError(f"no {' or '.join(WEIGHT_NAMES)} in the adapter folder", folder)
    tensors = SafetensorsFile(weights_path) if weights_path.suffix == ".safetensors" else TorchBinFile(weights_path)

    pairs: dict[str, dict[str, str]] = {}
    extra: list[str] = []
    for key in tensors.keys():
        parsed = peft_keys.parse_key(key)
        if parsed.part in (peft_keys.LORA_A, peft_keys.LORA_B) and parsed.param == "weight":
            slot = pairs.setdefault(parsed.module, {})
            if parsed.part in slot:
                raise AdapterFormatError(
                    f"module {parsed.module!r} has two {parsed.part} tensors (several adapter names?)", weights_path
                )
            slot[parsed.part] = key
        elif parsed.part == peft_keys.MAGNITUDE:
            raise UnsupportedAdapterError("DoRA magnitude vectors found: DoRA adapters are not supported", weights_path)
        else:
            extra.append(key)

    rank_pattern = config.get("rank_pattern") or {}
    modules: dict[str, LoraModule] = {}
    for module, slot in sorted(pairs.items()):
        if set(slot) != {peft_keys.LORA_A, peft_keys.LORA_B}:
            missing = ({peft_keys.LORA_A, peft_keys.LORA_B} - set(slot)).pop()
            raise AdapterFormatError(f"module {module!r} has no {missing} tensor", weights_path)
        a_key, b_key = slot[peft_keys.LORA_A], slot[peft_keys.LORA_B]
        for key in (a_key, b_key):
            if tensors.dtype(key) not in FLOAT_DTYPES or len(tensors.shape(key)) != 2:
                raise AdapterFormatError(
                    f"tensor {key!r} must be a 2-D float matrix, found {tensors.dtype(key)} {list(tensors.shape(key))}",
                    weights_path,
                )
        (rank, d_in), (d_out, rank_b) = tensors.shape(a_key), tensors.shape(b_key)
        if rank != rank_b:
            raise AdapterFormatError(
                f"module {module!r}: lora_A is {rank} x {d_in} but lora_B is {d_out} x {rank_b} (want r x d_in, d_out x r)",
                weights_path,
            )
        expected = int(pattern_value(rank_pattern, module, config["r"]))
        if rank != expected:
            raise AdapterFormatError(f"module {module!r} has rank {rank}, adapter_config.json says {expected}", weights_path)
        alpha, scale = lora_scale(config, module, rank)
        modules[module] = LoraModule(module, a_key, b_key, rank, d_in, d_out, alpha, scale)
    if not modules:
        raise AdapterFormatError("no LoRA A/B tensor pairs found", weights_path)

    model_config = _find_model_config(folder, config)
    family, note = detect_family(config, model_config, list(modules), str(folder))
    _check_layer_consistency(modules, family, weights_path)
    try:
        dims = ModelDims.from_config(model_config)
    except ValueError as exc:
        raise AdapterFormatError(f"{exc} (the base model of {folder})",
                                 Path(str(config.get("base_model_name_or_path"))) / "config.json") from None
    layers = [loc[0] for loc in (family.locate(m) for m in modules) if loc]
    if dims.n_layers:
        n_layers, layers_note = dims.n_layers, "config.json"
    else:
        n_layers, layers_note = (max(layers) + 1 if layers else 0), "adapter keys"
    adapter = Adapter(folder, config, weights_path, tensors, modules, extra, model_config, family, note, dims,
                      n_layers, layers_note)
    if layers_note == "adapter keys" and config.get("layers_to_transform") is not None:
        adapter.warnings.append(
            f"{folder}: layers_to_transform is set and the base model's config.json is not on disk; "
            f"the layer count ({n_layers}) is inferred from the adapter keys and may be too small"
        )
    return adapter
