"""What both stages share: adapter reading, the family registry, the plan format, console and errors."""

__version__ = "0.2.0"  # the package version (pyproject.toml reads it from here)
