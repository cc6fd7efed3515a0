"""OBS / SparseGPT weight reconstruction under a given mask rule (pure tensor math).

The solver walks the input columns left to right. At the start of every chunk of
`chunk` columns it asks `select` which weights of that chunk to keep, using the OBS
saliency w^2 / [H^-1]_jj of the *current* (already updated) weights; it then zeros the
others column by column and pushes each column's error onto the columns not yet
processed (Frantar & Alistarh, 2023). Shapes: weight [O, I], hessian [I, I].
"""

from __future__ import annotations

from typing import Callable

import torch

# select(saliency [O, c], first_column) -> keep bool [O, c]
ChunkSelector = Callable[[torch.Tensor, int], torch.Tensor]


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of (H + damp*I)^-1, and the mask of dead inputs (diag(H) == 0).

    hessian: float32 [I, I] (not modified). Returns (U [I, I], dead bool [I]).
    """
    h = hessian.clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    damp = percdamp * h.diagonal().mean()
    h.diagonal().add_(damp)
    try:
        factor = torch.linalg.cholesky(h)
    except torch.linalg.LinAlgError as err:
        raise ValueError(f"the calibration Hessian is not positive definite with --percdamp {percdamp}; raise it (e.g. 0.1)") from err
    h_inv = torch.cholesky_inverse(factor)
    return torch.linalg.cholesky(h_inv, upper=True), dead


def sparsegpt_reconstruct(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    select: ChunkSelector,
    chunk: int,
    percdamp: float = 0.01,
    lazy_block: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune `weight` with OBS error compensation.

    Args:
        weight: [O, I] (any float dtype; solved in float32).
        hessian: float32 [I, I], X^T X of the calibration inputs.
        select: the mask rule for one chunk of columns (see ChunkSelector).
        chunk: width of a mask decision (block width for three-tier, M for N:M).
        lazy_block: columns updated together before the trailing update; rounded up to a multiple of `chunk`.
    Returns:
        (new_weight float32 [O, I] with zeros where pruned, keep bool [O, I]).
    """
    w = weight.float().clone()
    out_features, in_features = w.shape
    u, dead = inverse_hessian_factor(hessian, percdamp)
    w[:, dead] = 0
    keep = torch.zeros_like(w, dtype=torch.bool)
    lazy_block = -(-lazy_block // chunk) * chunk
    for i1 in range(0, in_features, lazy_block):
        i2 = min(i1 + lazy_block, in_features)
        w1 = w[:, i1:i2].clone()  # (O, B)
        u1 = u[i1:i2, i1:i2]  # (B, B)
        err1 = torch.zeros_like(w1)
        keep1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if i % chunk == 0:
                j = min(i + chunk, i2 - i1)
                saliency = w1[:, i:j].pow(2) / u1.diagonal()[i:j].pow(2).unsqueeze(0)  # (O, c)
                keep1[:, i:j] = select(saliency, i1 + i)
            col = w1[:, i]
            q = col * keep1[:, i]
            err = (col - q) / u1[i, i]  # (O,)
            w1[:, i:] -= err.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        keep[:, i1:i2] = keep1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w * keep, keep
