"""hf-analyze: CPU-only analysis of LoRA adapters across model families into a fusion plan."""

from hf_common import __version__

__all__ = ["__version__"]
