"""Self-contained HTML reports: headings, tables, links and matplotlib figures embedded as PNG data.

Every stage writes one (``hf-analyze --report``, ``hf-fuse``'s ``report.html``, ``hf-eval evaluate``'s
``report.html``).  A report opens without a network: no script, no stylesheet or font from elsewhere,
images inline (``data:image/png;base64``).  The figures need matplotlib (the ``reports`` extra); without it
a report still holds every table and says which figures it left out.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from .atomic import write_text_atomic

logger = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #eaeef2; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: .8rem 0 1.4rem; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { font-size: .85rem; color: #57606a; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: .4rem .7rem; margin: .4rem 0; }
.meta { color: #57606a; font-size: .85rem; }
"""


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float = 7.0, height: float = 3.6, ncols: int = 1):
    """A matplotlib figure and its axes on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def whole_number_ticks(*axes) -> None:
    """Ticks on whole numbers only, for axes that count (steps, layers, indices)."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def png_bytes(fig) -> bytes:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # "tight": a legend placed beside the axes is kept
    plt.close(fig)
    return buffer.getvalue()


class HtmlReport:
    """Build a report piece by piece, then ``write`` it atomically.  Figures may also be kept as PNG files."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="meta">{html.escape(subtitle)}</p>')
        self.pngs: dict[str, bytes] = {}  # file name -> PNG, for callers that write them beside the report
        self.skipped_figures: list[str] = []
        self._plots = matplotlib_available()

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def warning(self, text: str) -> None:
        self.parts.append(f'<div class="warning">{html.escape(text)}</div>')

    def link(self, href: str, text: str) -> str:
        """An anchor as HTML text, for a table cell (``table(..., raw_html=True)``)."""
        return f'<a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>'

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[object]], *, raw_html: bool = False) -> None:
        """A table; numbers are right-aligned.  ``raw_html`` keeps cells that are already HTML (links)."""
        out = ["<table><thead><tr>", *(f"<th>{html.escape(str(c))}</th>" for c in columns), "</tr></thead><tbody>"]
        for row in rows:
            out.append("<tr>")
            for cell in row:
                numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
                text = f"{cell:.4g}" if isinstance(cell, float) else str(cell)
                out.append(f'<td{" class=num" if numeric else ""}>{text if raw_html else html.escape(text)}</td>')
            out.append("</tr>")
        out.append("</tbody></table>")
        self.parts.append("".join(out))

    def figure(self, name: str, caption: str, draw: Callable[[], object]) -> None:
        """Embed the figure ``draw()`` returns (a matplotlib Figure); ``name`` is its PNG file name."""
        if not self._plots:
            self.skipped_figures.append(name)
            return
        data = png_bytes(draw())
        self.pngs[name] = data
        encoded = base64.b64encode(data).decode("ascii")
        self.parts.append(f'<figure><img alt="{html.escape(caption, quote=True)}" src="data:image/png;base64,{encoded}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def render(self) -> str:
        parts = list(self.parts)
        if self.skipped_figures:
            parts.insert(1, '<div class="warning">' + html.escape(
                f"{len(self.skipped_figures)} figures left out: matplotlib is not installed "
                "(pip install 'heterofusion[reports]')") + "</div>")
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"generator\" content=\"heterofusion\"><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) +
                f'\n<p class="meta">Written {stamp} by heterofusion.</p>\n</body></html>\n')

    def write(self, path: Path, *, force: bool, what: str = "HTML report") -> None:
        write_text_atomic(path, self.render(), force=force, what=what)

    def write_pngs(self, folder: Path) -> list[Path]:
        """The figures as PNG files in ``folder`` (a folder being written atomically by the caller)."""
        paths = []
        for name, data in self.pngs.items():
            path = folder / name
            path.write_bytes(data)
            paths.append(path)
        return paths
