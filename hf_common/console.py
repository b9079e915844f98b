"""The one console object a CLI command uses for everything it shows.

Modelled on hatch: commands call ``error``/``warning``/``success``/``table``
and ``abort(message, code)``; nothing else writes to the terminal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import NoReturn

from rich.console import Console as RichConsole
from rich.logging import RichHandler
from rich.table import Table

# Exit codes, documented in README.md and docs/tools/.  They are used only by CLI layers.
EXIT_OK = 0
EXIT_NOTHING_TO_FUSE = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3  # training diverged (a non-finite loss); the last good checkpoint is kept
EXIT_INTERNAL = 4  # an unexpected error (a bug): never to be read as a verdict
EXIT_INTERRUPTED = 130


class Console:
    """Rich output on stdout (reports) and stderr (messages)."""

    def __init__(self, *, quiet: bool = False, debug: bool = False, report_to_stderr: bool = False,
                 process: int | None = None):
        self.debug = debug
        self.quiet = quiet
        # a secondary process of a data-parallel run: silent, and its errors name it; bad input, which every
        # process meets alike, is left to the main process to say once
        self.process = process
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True)
        self.out = self.err if report_to_stderr else RichConsole(highlight=False)

    # -- messages --------------------------------------------------------
    def error(self, message: str) -> None:
        where = f"process {self.process}: " if self.process is not None else ""
        self.err.print(f"[bold red]error:[/] {where}{_escape(message)}")

    def warning(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[yellow]warning:[/] {_escape(message)}")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(_escape(message))

    def success(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[bold green]✓[/] {_escape(message)}")

    def abort(self, message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
        if self.process is None or code != EXIT_BAD_INPUT:
            self.error(message)
        raise SystemExit(code)

    # -- reports ---------------------------------------------------------
    def rule(self, title: str) -> None:
        if not self.quiet:
            self.out.rule(f"[bold]{_escape(title)}")

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[object]],
              legend: Sequence[str] = ()) -> None:
        """A table; ``legend``: numbered notes printed under it (what a row or column means), so that long prose
        never squeezes the table's cells at 80 columns."""
        if self.quiet:
            return
        table = Table(title=title, title_justify="left", show_lines=False)
        cells = [[_escape(str(cell)) for cell in row] for row in rows]
        # The first column (a name) is kept on one line unless it is long enough to squeeze the others out.
        short_names = all(len(row[0]) <= 48 for row in cells if row)
        for index, column in enumerate(columns):
            table.add_column(column, no_wrap=index == 0 and short_names)
        for row in cells:
            table.add_row(*row)
        self.out.print(table)
        for number, note in enumerate(legend, 1):
            self.out.print(f"  {number}. {_escape(note)}")

    def print(self, renderable: object) -> None:
        if not self.quiet:
            self.out.print(renderable)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def setup_logging(debug: bool, log_file: str | None = None) -> None:
    """Route ``logging`` to a rich handler on stderr (warnings, or everything with --debug) and optionally
    to a file (info and up; created only when the first record arrives, so a failed run leaves none)."""
    console_handler = RichHandler(console=RichConsole(stderr=True), show_path=False, show_time=debug, rich_tracebacks=debug)
    console_handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    # the handler shows the level itself: without its own formatter, basicConfig would give it logging's default
    # "LEVEL:logger:message" and every warning would read "WARNING  WARNING:hf_fuse...: ..."
    console_handler.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [console_handler]
    if log_file:
        file_handler = logging.FileHandler(log_file, delay=True)
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file_handler)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=handlers, force=True)
    if debug:
        from rich.traceback import install

        install(show_locals=False)
