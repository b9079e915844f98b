"""Structure checks of the HTML reports: well-formed, self-contained (no network), images embedded as PNG."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src", ""))
        if tag == "a":
            self.links.append(values.get("href", ""))
        if tag == "script":
            self.scripts += 1
        if tag == "link":
            self.problems.append(f"external resource {values}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_report(path: Path) -> dict:
    """Parse a report; assert it is balanced, offline and its images are PNG data.  Returns what it holds."""
    source = path.read_text(encoding="utf-8")
    assert source.startswith("<!DOCTYPE html>")
    parser = _Collector()
    parser.feed(source)
    parser.close()
    assert not parser.problems and not parser.stack, (parser.problems, parser.stack)
    assert parser.scripts == 0
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [h for h in parser.links if "://" in h], parser.links  # relative links only: nothing from a network
    return {"images": len(parser.images), "links": parser.links, "text": " ".join(parser.text)}
