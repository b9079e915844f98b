"""The target base model: find it, check it fits the plan (in seconds, on the meta device), load it,
and attach the plan's target adapter with PEFT, frozen."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hf_common import peft_keys
from hf_common.errors import ConfigError, FileAccessError, InputError
from hf_common.plan import Plan
from hf_common.safetensors_io import SafetensorsFile
from hf_common.terms import HUB_ID

from . import gguf_cache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModelRef:
    folder: Path
    gguf_file: str | None
    hub_id: str | None = None  # the Hub repository the model is (or was quantised from), when known

    @property
    def label(self) -> str:
        return str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder)

    @property
    def adapter_base_name(self) -> str | None:
        """What an adapter made on this model names as its base (``base_model_name_or_path``, the card's
        ``base_model``): the Hub id when known, else the folder as PEFT writes it; never a ``.gguf`` file or a cache
        path (a GGUF-only base without a known id: None, and the card says how to load it)."""
        return self.hub_id or (None if self.gguf_file else str(self.folder))


GGUF_REPO_KEYS = ("general.base_model.0.repo_url", "general.source.repo_url", "general.source.huggingface.repository")


def hub_id_of(folder: Path, gguf_file: str | None) -> str | None:
    """A Hub id the model's own files state: ``_name_or_path`` of a folder's ``config.json`` when it is a repository
    id (not a path), or a GGUF file's source repository (``general.base_model.0.repo_url`` and the like), or the
    registry's id for a registry package's own GGUF file. Never guessed from a name."""
    if gguf_file:
        from .local_models import registry_hub_id

        if known := registry_hub_id(folder / gguf_file):
            return known
        from hf_common.model_card import gguf_strings

        stated = gguf_strings(folder / gguf_file, GGUF_REPO_KEYS)
        for key in GGUF_REPO_KEYS:
            value = stated.get(key, "").removeprefix("https://huggingface.co/").strip("/")
            if HUB_ID.match(value):
                return value
        return None
    try:
        name = json.loads((folder / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and HUB_ID.match(name) and not Path(name).exists() else None


def model_license(ref: BaseModelRef) -> str | None:
    """The licence a base model's own files write down: a GGUF file's ``general.license``, or the ``license`` of a
    model folder's card; None when they do not (never guessed)."""
    from hf_common.model_card import gguf_license, license_of

    return gguf_license(ref.folder / ref.gguf_file) if ref.gguf_file else license_of(ref.folder)


def resolve_base_model(path: str | Path, hub_id: str | None = None) -> BaseModelRef:
    """A Hugging Face model folder, a ``.gguf`` file, a folder holding exactly one ``.gguf``, or the name of a
    registry-installed model (``smollm2``, ``gemma3``; see ``hf_runtime.local_models``).  ``hub_id`` (the user's
    ``--base-model-id``) names the model on the Hub; without it, the registry's id or what the model's files state."""
    from .local_models import HUB_IDS, MODELS, locate

    if hub_id is not None and not HUB_ID.match(hub_id):
        raise ConfigError(f"--base-model-id must be a Hub repository id such as org/name, got {hub_id!r}")
    if str(path) in MODELS and not Path(path).exists():
        hub_id = hub_id or HUB_IDS.get(str(path))
        path = locate(str(path))
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return BaseModelRef(path.parent, path.name, hub_id or hub_id_of(path.parent, path.name))
    if path.is_dir():
        if (path / "config.json").is_file():
            return BaseModelRef(path, None, hub_id or hub_id_of(path, None))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return BaseModelRef(path, ggufs[0].name, hub_id or hub_id_of(path, ggufs[0].name))
        raise FileAccessError("no config.json, and not exactly one .gguf file, in the model folder", path)
    raise FileAccessError("base model not found" if not path.exists() else "not a model folder or .gguf file", path)


def load_config(ref: BaseModelRef):
    from transformers import AutoConfig

    folder, gguf_file = _source(ref)
    try:
        return AutoConfig.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError for a bad config
        raise InputError(f"cannot read the model configuration ({type(exc).__name__}: {exc})", ref.label) from None


def _features(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2 style: weight is (in, out)
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return None


def check_fit(config, plan: Plan, ref: BaseModelRef, tensors: SafetensorsFile | None = None,
              what: str = "the plan's target adapter") -> None:
    """Every LoRA module of an adapter (default: the plan's target adapter) exists in the model with matching shapes."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    tensors = tensors or plan.target_safetensors()
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for key in tensors.keys():
        parsed = peft_keys.parse_key(key)
        if parsed.part in (peft_keys.LORA_A, peft_keys.LORA_B) and parsed.param == "weight":
            shapes.setdefault(parsed.module, {})[parsed.part] = tensors.shape(key)
    for module, parts in sorted(shapes.items()):
        try:
            layer = skeleton.get_submodule(module)
        except AttributeError:
            raise InputError(f"{what} has module {module!r}, which this base model lacks "
                             f"({config.model_type}, {getattr(config, 'num_hidden_layers', '?')} layers)", ref.label) from None
        features = _features(layer)
        expected = (parts[peft_keys.LORA_A][1], parts[peft_keys.LORA_B][0])
        if features is not None and features != expected:
            raise InputError(f"module {module!r} is {features[0]} -> {features[1]} in this base model, but {what} "
                             f"was trained for {expected[0]} -> {expected[1]}", ref.label)


def family_mismatch(config, expected: str | None, ref: BaseModelRef, what: str = "the plan's target adapter") -> str | None:
    """A warning when the base model's family is known and is not ``expected``, the family ``what`` (an adapter) was
    made for: the shapes can fit by chance, and the weights then mean something else.  The same words on every path
    that loads a base model for an adapter (hf-fuse's target and source models, hf-eval)."""
    from hf_common.registry import families

    model_type = getattr(config, "model_type", None)
    family = next((f for f in families().values() if model_type in f.model_types), None)
    if family is None or expected is None or family.name == expected:
        return None
    return (f"{ref.label} is a {family.name} model ({model_type}), but {what} was made for a {expected} model: the "
            "shapes fit, the weights may not mean what the adapter expects")


def quiet_progress_bars() -> None:
    """``-q``: no progress bars from the libraries either (otherwise transformers' own bars show the long loads,
    the one-time GGUF conversion among them)."""
    import os

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"  # the GGUF converter's bar is plain tqdm


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(requested: str | None, device: torch.device) -> torch.dtype:
    if requested:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[requested]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _source(ref: BaseModelRef) -> tuple[Path, str | None]:
    """Where to read the model from: a GGUF file's converted copy in the cache when there is one."""
    if ref.gguf_file:
        folder = gguf_cache.cached(ref.folder / ref.gguf_file)
        if folder is not None:
            return folder, None
    return ref.folder, ref.gguf_file


def load_model_and_tokenizer(ref: BaseModelRef, device: torch.device, dtype: torch.dtype):
    """Load the model and tokenizer; a GGUF file is converted once and then read from the cache
    (``hf_runtime.gguf_cache``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf_file = _source(ref)
    if gguf_file:  # first use of this GGUF file (or the cache is off)
        # With the cache on, convert in fp32 so the stored copy is exact, then cast; with it off, load at
        # the requested dtype directly rather than holding an fp32 copy that nothing keeps.
        caching = gguf_cache.cache_root() is not None
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file,
                                                     dtype=torch.float32 if caching else dtype, local_files_only=True)
        if caching:
            gguf_cache.store(folder / gguf_file, model, tokenizer)
        model = model.to(dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def write_adapter_folder(folder: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write a PEFT adapter folder (config + safetensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, folder / "adapter_model.safetensors",
              metadata={"format": "pt"})


def attach_target(model: nn.Module, config: dict, tensors: dict[str, torch.Tensor], *, trainable: bool = False):
    """Wrap ``model`` in a ``PeftModel`` carrying an adapter: frozen, or with its LoRA weights trainable."""
    from peft import PeftModel

    with tempfile.TemporaryDirectory(prefix="hf-fuse-target-") as tmp:
        write_adapter_folder(Path(tmp), config, tensors)
        peft_model = PeftModel.from_pretrained(model, tmp, is_trainable=trainable)
    if not trainable:
        for param in peft_model.parameters():
            param.requires_grad_(False)
    return peft_model


def tensors_from_plan(plan: Plan) -> dict[str, torch.Tensor]:
    """The plan's target adapter as torch tensors in their stored dtypes."""
    return tensors_from_blob(plan.target_safetensors())


def tensors_from_blob(tensors: SafetensorsFile) -> dict[str, torch.Tensor]:
    """An adapter held in a plan (a safetensors blob) as torch tensors in their stored dtypes."""
    from safetensors.torch import load

    return load(tensors.blob.tobytes())
