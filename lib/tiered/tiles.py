"""Tiling a matrix into square blocks and back: the geometry every tier map refers to.

Letters: O = out_features, I = in_features, b = block_size, R = ceil(O / b) block rows,
C = ceil(I / b) block columns. Block (r, c) covers rows r*b.. and columns c*b.. of the matrix
padded at the bottom/right to [R*b, C*b]. Pure tensor functions, no devices or logging.
"""

from __future__ import annotations

import torch


def pad(x: torch.Tensor, rows: int, cols: int, value: float) -> torch.Tensor:
    """Pad a 2-D tensor at the bottom/right to [rows, cols] with `value`."""
    if x.shape == (rows, cols):
        return x
    out = x.new_full((rows, cols), value)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def to_blocks(x: torch.Tensor, block_size: int, fill: float = 0.0) -> torch.Tensor:
    """[O, I] -> [R, C, b, b], padding partial edge blocks with `fill`."""
    b = block_size
    n_rows, n_cols = -(-x.shape[0] // b), -(-x.shape[1] // b)
    padded = pad(x, n_rows * b, n_cols * b, fill)
    return padded.view(n_rows, b, n_cols, b).permute(0, 2, 1, 3)  # (R, C, b, b)


def from_blocks(blocks: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """[R, C, b, b] -> [O, I], dropping padding."""
    n_rows, n_cols, b, _ = blocks.shape
    full = blocks.permute(0, 2, 1, 3).reshape(n_rows * b, n_cols * b)  # (R*b, C*b)
    return full[:out_features, :in_features]
