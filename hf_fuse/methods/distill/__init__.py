"""``--method distill``, all of it in this package: ``method`` (its settings, the source experts' answers, the
students), ``synthesize`` (data-free: prompts written from a few seeds, then filtered), ``answer_cache`` (the answers
and written prompts, cached line by line and checked as input) and ``token_loss`` (token-level distillation across
tokenizers, and the example and training objective that carry it)."""

from .method import DistillMethod, DistillSettings

__all__ = ["DistillMethod", "DistillSettings"]
