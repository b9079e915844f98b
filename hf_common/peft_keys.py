"""Everything about PEFT's state-dict key naming lives in this module.

PEFT writes keys such as ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``;
live models (and some tools) add the adapter name (``lora_A.default.weight``), and
hand-made adapters often drop the ``base_model.model.`` prefix.  ``parse_key``
maps all of these forms to one normalised module path plus the tensor's part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PEFT_PREFIX = "base_model.model."

# Parts of a LoRA module we know by name.
LORA_A = "lora_A"
LORA_B = "lora_B"
EMBEDDING_A = "lora_embedding_A"
EMBEDDING_B = "lora_embedding_B"
MAGNITUDE = "lora_magnitude_vector"
OTHER = "other"

_LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.(?P<adapter>[^.]+))?(?:\.(?P<param>weight|bias))?$"
)


@dataclass(frozen=True)
class ParsedKey:
    key: str  # the key exactly as stored in the file
    module: str  # normalised module path, e.g. "model.layers.0.self_attn.q_proj"
    part: str  # one of LORA_A, LORA_B, EMBEDDING_A, EMBEDDING_B, MAGNITUDE, OTHER
    param: str  # "weight", "bias" or "" (embedding LoRA parameters have no suffix)
    adapter_name: str | None


def strip_prefix(name: str) -> str:
    """Remove PEFT's ``base_model.model.`` wrapper prefix (once) if present."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name


def parse_key(key: str) -> ParsedKey:
    """Normalise one adapter state-dict key."""
    match = _LORA_KEY.match(key)
    if not match:
        return ParsedKey(key, strip_prefix(key), OTHER, "", None)
    adapter = match.group("adapter")
    param = match.group("param") or ""
    # "lora_A.weight" parses with adapter=None; "lora_A.default.weight" with adapter="default";
    # embedding parameters have no ".weight": "lora_embedding_A.default" -> adapter="default".
    if adapter in ("weight", "bias") and not param:
        adapter, param = None, adapter
    return ParsedKey(key, strip_prefix(match.group("module")), match.group("part"), param, adapter)


def saved_key(module: str, part: str, param: str = "weight") -> str:
    """The key PEFT's ``save_pretrained`` writes for a module's LoRA part."""
    suffix = f".{param}" if param else ""
    return f"{PEFT_PREFIX}{module}.{part}{suffix}"


def live_parameter_name(module: str, part: str, adapter_name: str = "default") -> str:
    """The parameter name of a module's LoRA part inside a live ``PeftModel``."""
    return f"{PEFT_PREFIX}{module}.{part}.{adapter_name}.weight"
