"""`HybridLinear`: a pruned Linear that computes y = x W^T (+ bias) from its stored encoding, never a dense W.

Built from the fields a tiered checkpoint stores (`lib.tiered.format`): "tiered" (three-tier, and uniform 2:4
as an all-2:4 tier map) or "bitmask" (unstructured). With the compiled kernel (`build.extension()`) the
fields are repacked once (`repack`) and every call reads each stored value once per 8 tokens; without it
the module keeps the fields as stored and runs the exact reference (`lib.tiered.matmul.tiered_matmul`;
bitmask: decode, then F.linear). Shapes: x [..., I] -> y [..., O], in x's dtype; float32 or bfloat16 weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib.tiered.format import decode_bitmask
from lib.tiered.kernel.build import extension, kernel_ops
from lib.tiered.kernel.repack import CSR_LAYOUT, TIERED_LAYOUT, layout_bytes, repack_bitmask, repack_tiered
from lib.tiered.matmul import tiered_matmul

ENCODINGS = ("tiered", "bitmask")


class HybridLinear(nn.Module):
    """y = x W^T + bias from the stored encoding of W [O, I] = shape (see the module docstring)."""

    def __init__(self, encoding: str, fields: dict[str, torch.Tensor], shape: tuple[int, int], block_size: int,
                 bias: torch.Tensor | None = None, use_kernel: bool | None = None):
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
        self.encoding, self.block_size = encoding, block_size
        self.out_features, self.in_features = shape
        self._use_kernel = use_kernel is not False and extension() is not None
        if self._use_kernel:
            layout = repack_tiered(fields, block_size) if encoding == "tiered" else repack_bitmask(fields, shape)
        else:
            layout = {name: t.cpu().contiguous() for name, t in fields.items()}
        self.names = tuple(layout)
        for name, tensor in layout.items():
            self.register_buffer(name, tensor, persistent=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def uses_kernel(self) -> bool:
        return self._use_kernel

    def stored_bytes(self) -> int:
        """Bytes one call reads of this matrix (the kernel's layout, or the stored fields in the reference path)."""
        return layout_bytes({name: getattr(self, name) for name in self.names})

    def extra_repr(self) -> str:
        path = "kernel" if self.uses_kernel else "reference"
        return f"in_features={self.in_features}, out_features={self.out_features}, encoding={self.encoding}, {path}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self._use_kernel:
            ops, bias = kernel_ops(), self.bias
            if self.encoding == "tiered":
                y = ops.tiered_linear(x2.contiguous(), self.out_features, self.block_size,
                                           *[getattr(self, name) for name in TIERED_LAYOUT], bias)
            else:
                y = ops.csr_linear(x2.contiguous(), *[getattr(self, name) for name in CSR_LAYOUT], bias)
            return y.to(x.dtype).reshape(*lead, self.out_features)
        fields = {name: getattr(self, name) for name in self.names}
        shape = (self.out_features, self.in_features)
        if self.encoding == "tiered":
            y = tiered_matmul(x2, fields, shape, self.block_size)
            y = y if self.bias is None else y + self.bias.to(y.dtype)
        else:
            weight = decode_bitmask(fields, shape)
            y = F.linear(x2.to(weight.dtype), weight, None if self.bias is None else self.bias.to(weight.dtype))
        return y.to(x.dtype).reshape(*lead, self.out_features)


def install_hybrid(model: nn.Module, matrices: dict[str, tuple[str, dict[str, torch.Tensor], tuple[int, int]]],
                   block_size: int) -> int:
    """Replace each nn.Linear named by `matrices` ({weight parameter name: (encoding, fields, shape)}) by a
    HybridLinear (keeping its bias); returns how many use the compiled kernel."""
    on_kernel = 0
    for name, (encoding, fields, shape) in matrices.items():
        path = name.removesuffix(".weight")
        parent_name, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        bias = linear.bias if isinstance(linear, nn.Linear) else None
        hybrid = HybridLinear(encoding, fields, shape, block_size, bias)
        setattr(parent, child, hybrid)
        on_kernel += hybrid.uses_kernel
    return on_kernel
