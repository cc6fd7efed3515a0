"""The hybrid CPU kernel: y = x W^T read straight from the stored tiles (docs/kernel.md).

build (compile csrc/hybrid_kernel.cpp once; None and one warning where it cannot: the exact reference
`lib.tiered.matmul` is used), repack (the stored encodings -> the kernel's layout, once at load time),
linear (`HybridLinear`, the nn.Module a tiered checkpoint's pruned Linears become with kernel="hybrid").
"""
