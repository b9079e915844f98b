"""``python -m hf_analyze``: the hf-analyze command (where the console script is not installed)."""

from .cli import main

if __name__ == "__main__":
    main()
