"""The bottleneck adapter of MEFT (and of Houlsby et al., 2019).

    Linear(hidden -> r), the model's activation, dropout, Linear(r -> hidden)

Weights are drawn from N(0, init_std^2) and biases start at zero, as in the authors' BERT code, so
that the adapter's output is close to zero at initialisation and the PLM's starting point is kept.
"""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """x -> up(dropout(act(down(x)))); maps (..., hidden) to (..., hidden)."""

    def __init__(
        self,
        hidden_size: int,
        adapter_dim: int,
        activation: str,
        dropout: float,
        init_std: float,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.init_std = init_std
        self.down = nn.Linear(hidden_size, adapter_dim, device=device, dtype=dtype)
        # imported here: transformers.activations pulls in its kernel hub and distributed tensors (about
        # 3 s), which a command answered from cached formulas never needs
        from transformers.activations import ACT2FN

        self.act = ACT2FN[activation]
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(adapter_dim, hidden_size, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.down, self.up):
            nn.init.normal_(linear.weight, std=self.init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x))))  # (B, T, H) -> (B, T, r) -> (B, T, H)
