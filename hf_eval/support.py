"""What the hf-eval commands share: quiet libraries, the per-process console, loading a base model, model cards."""

from __future__ import annotations

from pathlib import Path

from hf_common.cli_support import library_environment
from hf_common.console import Console


def quiet_libraries(quiet: bool) -> None:
    library_environment()
    if quiet:
        from hf_runtime.model import quiet_progress_bars

        quiet_progress_bars()


def load(base_model: Path, device: str | None, dtype: str | None, base_model_id: str | None = None):
    from hf_runtime.distributed import device_for
    from hf_runtime.model import load_model_and_tokenizer, pick_device, pick_dtype, resolve_base_model

    ref = resolve_base_model(base_model, base_model_id)
    torch_device = pick_device(device_for(device))
    model, tokenizer = load_model_and_tokenizer(ref, torch_device, pick_dtype(dtype, torch_device))
    return ref, model, tokenizer, torch_device


def process_console(quiet: bool, debug: bool, report_to_stderr: bool = False) -> Console:
    from hf_runtime.distributed import process_console

    return process_console(quiet, debug, report_to_stderr)


def finish() -> None:
    from hf_runtime.distributed import finish

    finish()


def is_main() -> bool:
    from hf_runtime.distributed import processes

    return processes().is_main


def card(title, ref, how, details, tags, *inputs) -> str:
    """The card of an adapter made on base model ``ref``: its Hub id as the base model (a note on loading a GGUF base),
    the inputs' licence, else the base model's own."""
    from hf_common.model_card import card, gguf_loading_note, license_of
    from hf_runtime.model import model_license

    return card(title=title, base_model=ref.adapter_base_name, how=how + gguf_loading_note(ref.gguf_file, ref.hub_id),
                details=details, tags=tags, license=license_of(*[Path(i) for i in inputs]) or model_license(ref))


def check_adapters_fit(base_model: Path, named: dict[str, Path | None]) -> list[str]:
    """Every adapter's modules exist in the base model with its shapes (meta device: seconds, before any load), else
    refused; a base model of another family than an adapter was made for is a warning (logged and returned), in the
    words hf-fuse uses for its target."""
    import logging

    from hf_common.adapter import load_adapter
    from hf_runtime.model import check_fit, family_mismatch, load_config, resolve_base_model

    ref = resolve_base_model(base_model)
    config = load_config(ref)
    warnings = []
    for name, path in named.items():
        if path is not None:
            adapter = load_adapter(path)
            what = f"adapter {name} ({path})"
            check_fit(config, None, ref, tensors=adapter.tensors, what=what)
            mismatch = family_mismatch(config, adapter.family.name, ref, what)
            if mismatch:
                logging.getLogger("hf_eval").warning(mismatch)
                warnings.append(mismatch)
    return warnings
