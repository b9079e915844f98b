"""The terms of a fused adapter's inputs: which licence each input that reaches the weights writes down, how it
reaches them, and what a model card may then claim.

A fused adapter is made from the target's base model and adapter and, through every fusion method, from each source:
its adapter's factors are read (the HyperNet), its update is carried into the target's coordinates (``project``), or
the source expert (its base model with its adapter) writes the answers the target is trained on (``distill``).  Some
model terms cover such models (Gemma's name models trained on Gemma's outputs), so the card names every input's
licence, never drops one it does not know, and claims one licence only where every input agrees.

Torch-free: ``hf-analyze`` renders its licence table with :func:`licence_text`, so both say the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Licences that put no terms on models trained on a model's outputs or weights (the Hub's identifiers)
PERMISSIVE = frozenset({"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc0-1.0", "unlicense"})
# Where the text of a licence is, for the card's table (an identifier not listed here is shown without a link)
LINKS = {
    "apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0",
    "mit": "https://opensource.org/license/mit",
    "gemma": "https://ai.google.dev/gemma/terms",
    "llama3": "https://www.llama.com/llama3/license/",
    "llama3.1": "https://www.llama.com/llama3_1/license/",
    "llama3.2": "https://www.llama.com/llama3_2/license/",
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
}
UNKNOWN = "unknown (not written down)"
TERMS_FILE = "LICENSE.md"  # what ``license_link`` names when the inputs' licences differ
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def licence_text(value: str | None) -> str:
    """A licence as the reports and the card write it: the identifier, or that none is written down."""
    return value if value else UNKNOWN


def as_hub_id(value: str | None) -> str | None:
    """``value`` when it has the form of a Hub repository id (``org/name``; never an absolute path), else None."""
    return value if value and HUB_ID.match(value) else None


def public_name(value: str | None) -> str:
    """How a card names an input: its Hub id when it is one, else the last part of its path (never a folder of this
    machine)."""
    if not value:
        return "not recorded"
    return as_hub_id(value) or Path(value).name


@dataclass(frozen=True)
class InputTerms:
    """One input of a fused adapter: what it is (``target adapter``, ``source 0 base model``...), its public name,
    the licence it writes down (None: none), how it reaches the fused weights, and the sha256 of its files (adapters)."""

    input: str
    name: str
    licence: str | None
    relation: str
    sha256: tuple[str, ...] = ()

    @property
    def is_source(self) -> bool:
        return self.input.startswith("source")


def front_matter(inputs: list[InputTerms]) -> dict[str, str]:
    """The card's licence keys: the licence every input writes down when they agree; ``license: other`` with
    ``license_name`` / ``license_link`` (the Hub's keys for a licence not in its list) when they differ or some are
    unknown; nothing when none is written down (nothing is claimed)."""
    known = sorted({e.licence.lower() for e in inputs if e.licence})
    if not known:
        return {}
    if len(known) == 1 and all(e.licence for e in inputs):
        return {"license": known[0]}
    names = known + (["unknown"] if any(not e.licence for e in inputs) else [])
    slug = re.sub(r"[^a-z0-9.]+", "-", "-and-".join(names)).strip("-")
    return {"license": "other", "license_name": slug, "license_link": TERMS_FILE}


def notices(inputs: list[InputTerms], method: str) -> list[str]:
    """A warning for each source input under a licence outside the permissive ones (the console, the report and the
    card say the same)."""
    return [f"{e.input} ({e.name}) is under the {e.licence!r} licence and {e.relation} (--method {method}), which such "
            "terms may cover; check them before you share the fused adapter"
            for e in inputs if e.is_source and e.licence and e.licence.lower() not in PERMISSIVE]


def section(inputs: list[InputTerms], warnings: list[str]) -> str:
    """The card's "Terms of the inputs" section (also the body of ``LICENSE.md`` when the licences differ)."""
    lines = ["## Terms of the inputs", "",
             "Every input that reached this adapter's weights, with the licence it writes down. This adapter is "
             "subject to each of them; the toolkit grants no licence of its own.", "",
             "| input | name | licence | how it reached the weights | sha256 |", "|---|---|---|---|---|"]
    for e in inputs:
        licence = licence_text(e.licence)
        if e.licence and e.licence.lower() in LINKS:
            licence = f"[{e.licence}]({LINKS[e.licence.lower()]})"
        digests = ", ".join(f"`{d}`" for d in e.sha256) or "-"
        lines.append(f"| {e.input} | {_cell(e.name)} | {licence} | {e.relation} | {digests} |")
    if warnings:
        lines += [line for w in warnings for line in ("", f"**Warning:** {w}.")]
    return "\n".join(lines) + "\n"


def licence_file(inputs: list[InputTerms], warnings: list[str]) -> str:
    """``LICENSE.md`` of an adapter whose inputs' licences differ: what ``license_link`` points to."""
    return "# Terms of this adapter\n\n" + section(inputs, warnings).split("\n", 2)[2]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
