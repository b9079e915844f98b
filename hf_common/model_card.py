"""Model cards: the ``README.md`` every adapter folder we write carries, as PEFT and mergekit write them.

YAML front matter (``base_model``, ``library_name: peft``, ``tags``, ``license`` where one is written
down) and a body that says how the adapter was made.  Licences are copied from the inputs' own cards,
never guessed.  :func:`read_front_matter` reads such a card back (also other tools' cards).
"""

from __future__ import annotations

import re
from pathlib import Path

from .terms import InputTerms, as_hub_id, front_matter, public_name, section

CARD_NAME = "README.md"
_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)


def read_front_matter(folder: Path) -> dict:
    """The YAML front matter of ``folder/README.md`` (an empty dict when there is none or it does not parse)."""
    import yaml

    path = Path(folder) / CARD_NAME
    try:
        match = _FRONT.match(path.read_text(encoding="utf-8"))
        data = yaml.safe_load(match.group(1)) if match else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def card(*, title: str, base_model: str | None, how: str, details: dict[str, object] | None = None,
         tags: list[str] | None = None, license: str | None = None, scores: dict | None = None,
         terms: tuple[list[InputTerms], list[str]] | None = None) -> str:
    """The text of a model card.  ``base_model`` goes into the front matter only when it is a Hub id (a folder of
    this machine is named by its last part, in the body); ``terms`` (each input's licence and the warnings about
    them, :mod:`hf_common.terms`) set the licence keys and add the "Terms of the inputs" section, else ``license``
    (when known) is the card's licence."""
    import yaml

    public = as_hub_id(base_model)
    front: dict[str, object] = {"base_model": public, "library_name": "peft",
                                "tags": ["heterofusion", "lora", *(tags or [])]}
    if terms is not None:
        front.update(front_matter(terms[0]))
    elif license:
        front["license"] = license
    if base_model and public is None:
        details = {"base model": public_name(base_model), **(details or {})}
    lines = ["---", yaml.safe_dump({k: v for k, v in front.items() if v is not None}, sort_keys=False).strip(), "---", "",
             f"# {title}", "", how, ""]
    if details:
        lines += ["| | |", "|---|---|"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in details.items()]
        lines.append("")
    if terms is not None:
        lines += [section(*terms), ""]
    if scores:
        lines += [scores_section(scores), ""]
    lines.append("Written by the HeteroFusion toolkit. Load with `PeftModel.from_pretrained(base_model, this_folder)`.")
    return "\n".join(lines) + "\n"


_SCORES = re.compile(r"<!-- hf-eval scores -->.*?<!-- /hf-eval scores -->\n?", re.S)


def scores_section(scores: dict, note: str = "") -> str:
    """The card's scores, between markers so that a later evaluation replaces them."""
    lines = ["<!-- hf-eval scores -->", "## Scores (`hf-eval evaluate`)", ""]
    if note:
        lines += [note, ""]
    lines += ["| task | precision | recall | F1 |", "|---|---|---|---|"]
    lines += [f"| {task} | {100 * s['precision']:.1f} | {100 * s['recall']:.1f} | {100 * s['f1']:.1f} |"
              for task, s in scores.items()]
    return "\n".join(lines) + "\n<!-- /hf-eval scores -->"


def update_scores(folder: Path, scores: dict, note: str) -> None:
    """Write ``scores`` into ``folder``'s card (atomically), replacing the scores of an earlier evaluation; an
    adapter without a card gets a short one naming its base model."""
    import json

    from .atomic import write_text_atomic

    path = Path(folder) / CARD_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        config = json.loads((Path(folder) / "adapter_config.json").read_text())
        text = card(title="LoRA adapter", base_model=config.get("base_model_name_or_path"),
                    how="This adapter came without a model card; `hf-eval evaluate --update-cards` wrote this one.")
    section = scores_section(scores, note)
    if _SCORES.search(text):
        text = _SCORES.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_text_atomic(path, text, force=True, what="model card")


def _cell(value: object) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return str(value).replace("|", "\\|").replace("\n", " ")


def gguf_loading_note(gguf_file: str | None, hub_id: str | None) -> str:
    """A card's sentence on loading a base model that was read from a GGUF file (empty when it was not)."""
    if not gguf_file:
        return ""
    origin = f" (quantised from `{hub_id}`, the base model named above)" if hub_id else ""
    return (f" It was trained on the GGUF file `{gguf_file}`{origin}; to load that file: "
            f"`AutoModelForCausalLM.from_pretrained(folder, gguf_file=\"{gguf_file}\")`, then "
            "`PeftModel.from_pretrained(model, this_folder)`.")


def gguf_strings(path: Path, keys: tuple[str, ...]) -> dict[str, str]:
    """The non-empty text fields among ``keys`` that a GGUF file's header writes down (none when it cannot be read)."""
    try:
        from gguf import GGUFReader

        fields = GGUFReader(path).fields
        values = {key: fields[key].contents() for key in keys if key in fields}
    except Exception:  # an unreadable header is the loader's to report; here it only means nothing is written down
        return {}
    return {key: value.strip() for key, value in values.items() if isinstance(value, str) and value.strip()}


def gguf_license(path: Path) -> str | None:
    """The ``general.license`` a GGUF file's header writes down (None when it does not, or cannot be read)."""
    return gguf_strings(path, ("general.license",)).get("general.license")


def license_of(*folders: Path | None) -> str | None:
    """The licence written in the first of ``folders`` whose card names one."""
    for folder in folders:
        if folder is not None:
            value = read_front_matter(folder).get("license")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None
