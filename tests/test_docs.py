"""The user's documentation: the README stays a guide (short, no dated results, no issue numbers), every tool and
every registered method has its page, and every relative link and anchor of the README, docs/ and benchmarks/
resolves (plain Markdown, read on GitHub or in the repository)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked here (no network)
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_is_a_short_guide_without_dated_results_or_issue_numbers():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dated results belong in benchmarks/results/"
    assert not re.search(r"\b[Ii]ssue\s+#?\d+", text), "no issue numbers in user-facing text"


def test_every_tool_and_every_registered_method_has_its_page():
    from hf_fuse.methods import METHODS

    for tool in ("hf-analyze", "hf-fuse", "hf-eval"):
        assert (ROOT / "docs/tools" / f"{tool}.md").is_file(), tool
    for name in (n for n, cls in METHODS.items() if cls.__module__.startswith("hf_fuse.methods.")):  # not a test's
        assert (ROOT / "docs/methods" / f"{name}.md").is_file(), f"docs/methods/{name}.md: a page for --method {name}"
    assert (ROOT / "benchmarks/README.md").is_file()
