"""hf-analyze: CPU-only analysis of LoRA adapters across model families into a fusion plan."""

__version__ = "0.2.0"
