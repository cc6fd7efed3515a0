"""OBS / SparseGPT weight reconstruction under a given mask rule (pure tensor math).

The solver walks the input columns left to right. At the start of every chunk of
`chunk` columns it asks `select` which weights of that chunk to keep, using the OBS
saliency w^2 / [H^-1]_jj of the *current* (already updated) weights; it then zeros the
others column by column and pushes each column's error onto the columns not yet
processed (Frantar & Alistarh, 2023). Shapes: weight [O, I], hessian [I, I].

Updates are applied lazily at three levels, which changes only the order of float
additions: within a group of at most GROUP columns by a few whole-group sweeps, onto the
rest of the lazy block once per group (one [O, g] x [g, B] product), onto the columns
after the block once per block. Rows never interact except through `select`, so Linears that read
the same input can be solved together as one stacked weight.
"""

from __future__ import annotations

from typing import Callable

import torch

# select(saliency [O, c], first_column) -> keep bool [O, c]
ChunkSelector = Callable[[torch.Tensor, int], torch.Tensor]
# (U [I, I] upper Cholesky factor of the damped inverse Hessian, dead bool [I])
HessianFactor = tuple[torch.Tensor, torch.Tensor]

GROUP = 16  # columns solved together before their product with the rest of the block


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float) -> HessianFactor:
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


def _solve_group(w: torch.Tensor, keep: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """OBS errors of one group of columns whose mask is fixed; zeroes the pruned weights in place.

    Column by column, err_i = w'_i / u_ii on pruned weights (0 on kept ones) with
    w'_i = w_i - sum_{k<i} err_k u_ki: a triangular system per row. Jacobi sweeps over all
    columns at once solve it exactly after as many sweeps as the most pruned weights in a
    row (2 for 2:4), each entry then computed by the same formula as the column loop.
    w: [O, g] current weights (updated in place: pruned -> 0, kept -> compensated);
    keep: bool [O, g]; u: [g, g] the group's block of the factor. Returns err [O, g].
    """
    diag, strict = u.diagonal(), u.triu(1)
    err = w.div(diag).masked_fill_(keep, 0)  # exact for each row's first pruned column
    for _ in range(w.shape[1] - int(keep.sum(1).min()) - 1):
        err = torch.addmm(w, err, strict, alpha=-1).div_(diag).masked_fill_(keep, 0)
    w.addmm_(err, strict, alpha=-1).masked_fill_(~keep, 0)
    return err


def sparsegpt_reconstruct(
    weight: torch.Tensor,
    factor: HessianFactor,
    select: ChunkSelector,
    chunk: int,
    lazy_block: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune `weight` with OBS error compensation.

    Args:
        weight: [O, I] (any float dtype; solved in float32).
        factor: `inverse_hessian_factor` of the calibration Hessian X^T X (shareable by
            every Linear that reads the same input).
        select: the mask rule for one chunk of columns (see ChunkSelector).
        chunk: width of a mask decision (block width for three-tier, M for N:M).
        lazy_block: columns updated together before the trailing update; rounded up to a multiple of `chunk`.
    Returns:
        (new_weight float32 [O, I] with zeros where pruned, keep bool [O, I]).
    """
    u, dead = factor
    w = weight.float().clone()
    in_features = w.shape[1]
    w[:, dead] = 0
    keep = torch.zeros_like(w, dtype=torch.bool)
    diag_sq = u.diagonal().pow(2)  # (I,)
    lazy_block = -(-lazy_block // chunk) * chunk
    for i1 in range(0, in_features, lazy_block):
        i2 = min(i1 + lazy_block, in_features)
        w1 = w[:, i1:i2]  # (O, B) view: updated in place
        u1 = u[i1:i2, i1:i2]  # (B, B)
        err1 = torch.empty_like(w1)
        for c1 in range(0, i2 - i1, chunk):
            c2 = min(c1 + chunk, i2 - i1)
            keep[:, i1 + c1 : i1 + c2] = select(w1[:, c1:c2].pow(2) / diag_sq[i1 + c1 : i1 + c2], i1 + c1)
            for g1 in range(c1, c2, GROUP):
                g2 = min(g1 + GROUP, c2)
                err1[:, g1:g2] = _solve_group(w1[:, g1:g2], keep[:, i1 + g1 : i1 + g2], u1[g1:g2, g1:g2])
                if g2 < i2 - i1:
                    w1[:, g2:].addmm_(err1[:, g1:g2], u1[g1:g2, g2:], alpha=-1)
        if i2 < in_features:
            w[:, i2:].addmm_(err1, u[i1:i2, i2:], alpha=-1)
    return w, keep
