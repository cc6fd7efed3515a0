"""Streaming per-Linear calibration statistics (the inputs X of one nn.Linear, I = in_features).

Each accumulator follows one lifecycle: `add_batch(inp)` for every calibration batch,
then read its statistic, then drop it. Accumulation is in float32 whatever the model dtype.
"""

from __future__ import annotations

import torch


class ActNormStats:
    """Wanda's statistic: act_norm_sq [I] = sum over calibration tokens of x_j^2 (float32).

    O(I) memory. Only ratios within one matrix (and across matrices that saw the same
    tokens) matter, so the plain sum is kept rather than a per-sample mean.
    """

    def __init__(self, in_features: int, device: torch.device) -> None:
        self.act_norm_sq = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.n_tokens = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        """inp: [..., I] activations entering the Linear (all positions are real tokens)."""
        x = inp.reshape(-1, inp.shape[-1]).float()  # (N, I)
        self.act_norm_sq += x.pow(2).sum(dim=0)
        self.n_tokens += x.shape[0]


class HessianStats:
    """SparseGPT's statistic: H = X^T X [I, I] (float32), summed over calibration tokens.

    O(I^2) memory; diag(H) equals ActNormStats.act_norm_sq, so block ranking can use it.
    Only the blocks on and above the diagonal are accumulated (H is symmetric), in row
    strips of `strip` inputs: about (1 + strip / I) / 2 of the full product's work.
    """

    def __init__(self, in_features: int, device: torch.device, strip: int = 128) -> None:
        self._upper = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.strip = strip
        self.n_tokens = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        """inp: [..., I]."""
        x = inp.reshape(-1, inp.shape[-1]).float()  # (N, I)
        for start in range(0, x.shape[1], self.strip):
            end = min(start + self.strip, x.shape[1])
            self._upper[start:end, start:].addmm_(x[:, start:end].t(), x[:, start:])  # (s, I - start)
        self.n_tokens += x.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """The full symmetric H [I, I] (a new tensor)."""
        upper = self._upper.triu()
        return upper + upper.triu(1).t()

    @property
    def act_norm_sq(self) -> torch.Tensor:
        return self._upper.diagonal().clone()
