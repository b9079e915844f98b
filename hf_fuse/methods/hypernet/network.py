"""The per-group transfer network of HeteroFusion.

A module group (e.g. all ``q_proj`` modules) gets one :class:`HyperNet`.  Each target
module is one query sequence of LoRA block tokens; the source modules mapped onto it
form the key/value sequence.  Tokens are flattened ``block_size x rank`` blocks
(row-major), descriptors are the singular values of each block.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hf_common.errors import ConfigError, require_int

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HyperNetConfig:
    """Sizes and knobs of one transfer network (every group shares them)."""

    block_size: int
    rank: int
    embed_dim: int = 1024
    n_heads: int = 8
    max_positions: int = 4096
    mu_gate: float = 0.10
    alpha_init: float = 0.3
    ablate_denoise: bool = False
    init: str = "torch"  # torch: PyTorch's default Linear init; xavier: xavier-uniform weights, zero biases

    def __post_init__(self) -> None:
        for flag, value in (("--block-size", self.block_size), ("--rank", self.rank), ("--embed-dim", self.embed_dim),
                            ("--n-heads", self.n_heads), ("--max-positions", self.max_positions)):
            require_int(flag, value)
        if self.embed_dim % self.n_heads:
            raise ConfigError(f"--embed-dim ({self.embed_dim}) must be divisible by the number of heads ({self.n_heads})")
        if self.embed_dim % 4:
            raise ConfigError(f"--embed-dim ({self.embed_dim}) must be divisible by 4 (the gate MLP width is embed_dim // 4)")
        if self.init not in ("torch", "xavier"):
            raise ConfigError(f"--init must be torch or xavier, got {self.init!r}")
        for flag, value in (("--mu-gate", self.mu_gate), ("--alpha-init", self.alpha_init)):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{flag} must be a finite number, got {value!r}")

    @property
    def token_dim(self) -> int:
        """Length of one flattened ``block_size x rank`` token."""
        return self.block_size * self.rank


class DenoisingEncoder(nn.Module):
    """Row/column projection of block tokens, gated by their singular values."""

    def __init__(self, config: HyperNetConfig):
        super().__init__()
        self.config = config
        d, t = config.embed_dim, config.token_dim
        self.in_norm = nn.LayerNorm(t)
        self.row_proj = nn.Linear(t, d)
        self.col_proj = nn.Linear(t, d)
        self.gate_mlp = nn.Sequential(nn.Linear(config.rank, d // 4), nn.ReLU(), nn.Linear(d // 4, d))
        self.out_norm = nn.LayerNorm(d)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Row and column features ``(f_row, f_col)``, each ``(..., embed_dim)``."""
        b, r = self.config.block_size, self.config.rank
        x_n = self.in_norm(x)
        f_row = F.gelu(self.row_proj(x_n))
        x_col = x_n.reshape(*x_n.shape[:-1], b, r).transpose(-1, -2).reshape(*x_n.shape[:-1], b * r)
        f_col = F.gelu(self.col_proj(x_col))
        return f_row, f_col

    def gate(self, s: Tensor) -> Tensor:
        """Spectral gate in ``[0, 1]`` (all ones when the denoiser is ablated)."""
        if self.config.ablate_denoise:
            return torch.ones(*s.shape[:-1], self.config.embed_dim, dtype=s.dtype, device=s.device)
        return torch.clamp(F.relu(self.gate_mlp(s) + self.config.mu_gate), 0.0, 1.0)

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Encode tokens ``x`` (..., token_dim) with descriptors ``s`` (..., rank); returns ``(z, gate)``."""
        if x.shape[-1] != self.config.token_dim or s.shape[-1] != self.config.rank or x.shape[:-1] != s.shape[:-1]:
            raise ValueError(f"token shape {tuple(x.shape)} / descriptor shape {tuple(s.shape)} do not match "
                             f"token_dim {self.config.token_dim} and rank {self.config.rank}")
        f_row, f_col = self.features(x)
        g = self.gate(s)
        return self.out_norm((f_row + f_col) * g), g


@dataclass
class HyperNetOutput:
    """What one forward pass of a :class:`HyperNet` returns."""

    delta_tokens: Tensor  # (U, Tt, token_dim); zero at padded target positions
    z_target: Tensor  # (n_real_target_tokens, embed_dim)
    z_source: Tensor  # (n_real_source_tokens, embed_dim)
    attention: Tensor  # (U, Tt, Ts), averaged over heads


class HyperNet(nn.Module):
    """Encoder + cross attention (target queries, source keys/values) + zero-initialised decoder."""

    def __init__(self, config: HyperNetConfig):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.encoder = DenoisingEncoder(config)
        self.positions = nn.Embedding(config.max_positions, d)
        self.attention = nn.MultiheadAttention(d, config.n_heads, batch_first=True)
        self.decoder = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, config.token_dim))
        if config.init == "xavier":
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)
        self.alpha = nn.Parameter(torch.tensor(float(config.alpha_init)))

    def _position_embeddings(self, length: int, device: torch.device) -> Tensor:
        if length > self.config.max_positions:
            raise ConfigError(f"a sequence of {length} tokens is longer than --max-positions ({self.config.max_positions})")
        return self.positions(torch.arange(length, device=device))

    def forward(self, target_tokens: Tensor, target_desc: Tensor, target_mask: Tensor,
                source_tokens: Tensor, source_desc: Tensor, source_mask: Tensor) -> HyperNetOutput:
        """Predict update tokens for every target module of the group (one sequence per module)."""
        if target_tokens.dim() != 3 or source_tokens.dim() != 3:
            raise ValueError("target_tokens and source_tokens must have shape (U, T, token_dim)")
        if target_mask.shape != target_tokens.shape[:2] or source_mask.shape != source_tokens.shape[:2]:
            raise ValueError("masks must have shape (U, T) matching their tokens")
        if source_tokens.shape[0] != target_tokens.shape[0]:
            raise ValueError(f"{target_tokens.shape[0]} target sequences but {source_tokens.shape[0]} source sequences")
        target_mask, source_mask = target_mask.bool(), source_mask.bool()
        # One encoder call on the real tokens of both sides: half the weight-gradient work of two calls, none on padding.
        t_real, s_real = target_tokens[target_mask], source_tokens[source_mask]
        z_real, _ = self.encoder(torch.cat([t_real, s_real]), torch.cat([target_desc[target_mask], source_desc[source_mask]]))
        z_t_real, z_s_real = z_real.split([len(t_real), len(s_real)])
        z_t = z_real.new_zeros(*target_mask.shape, z_real.shape[-1]).index_put((target_mask,), z_t_real)
        z_s = z_real.new_zeros(*source_mask.shape, z_real.shape[-1]).index_put((source_mask,), z_s_real)
        query = z_t + self._position_embeddings(z_t.shape[1], z_t.device)
        keys = z_s + self._position_embeddings(z_s.shape[1], z_s.device)
        attended, weights = self.attention(query, keys, keys, key_padding_mask=~source_mask,
                                           need_weights=True, average_attn_weights=True)
        delta = self.decoder(attended) * target_mask.unsqueeze(-1).to(attended.dtype)
        return HyperNetOutput(delta_tokens=delta, z_target=z_t_real, z_source=z_s_real, attention=weights)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class HyperNets(nn.Module):
    """One HyperNet per group, addressed by group name (``q_proj.r8``; dots are not allowed in module names)."""

    def __init__(self, nets: dict[str, HyperNet] | None = None):
        super().__init__()
        self.nets = nn.ModuleDict()
        for name, net in (nets or {}).items():
            self[name] = net

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def __getitem__(self, name: str) -> HyperNet:
        return self.nets[self._key(name)]

    def __setitem__(self, name: str, net: HyperNet) -> None:
        self.nets[self._key(name)] = net

    def __contains__(self, name: str) -> bool:
        return self._key(name) in self.nets

    def names(self) -> list[str]:
        return [key.replace("__", ".") for key in self.nets]
