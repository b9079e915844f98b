"""The paper's HyperNet (``--method hypernet``, the default), all of it in this package: ``network`` (the per-group
HyperNet: encoder with the SVD-guided gate, cross-attention, zero-initialised decoder, α), ``plan_tensors`` (the
plan's token rows as tensors), ``patching`` (the live ``lora_B`` weights replaced by ``B_t + α ΔB`` inside the
autograd graph), ``rdm`` (the sliced-Wasserstein regulariser), ``forward`` (one forward shared by training and
export), ``export`` (the fused tensors and what the report says of each group) and ``method`` (its settings, its
training step, its report and card)."""

from .method import HyperNetMethod, HyperNetObjective, HyperNetSettings

__all__ = ["HyperNetMethod", "HyperNetObjective", "HyperNetSettings"]
