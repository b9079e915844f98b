"""hf-fuse's progress line keeps its bar, step count and times at 80 columns, and shows every metric when wide."""

import io

import pytest
from rich.console import Console as RichConsole

from hf_common.console import Console
from hf_fuse.report import Progress

RECORD = {"step": 3, "loss": 5.6525, "lm": 5.6498, "rdm": 0.55, "lr": 5e-5, "alpha": {"q_proj.r4": 0.3}}


@pytest.mark.parametrize("width", [80, 120])
def test_the_progress_line_fits_the_terminal(width):
    console = Console()
    out = io.StringIO()
    console.err = RichConsole(file=out, width=width, color_system=None)
    with Progress(console) as progress:
        progress.event("step", (0, RECORD, 10))
    line = [x for x in out.getvalue().splitlines() if x.strip()][-1]
    assert len(line) <= width and "3/10" in line and "━" in line and "0:00:00" in line and "loss 5.65" in line
    assert ("rdm 0.5500" in line) == (width >= 110)
