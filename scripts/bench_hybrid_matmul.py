#!/usr/bin/env python
"""Time the reference hybrid matmul (lib/tiered/matmul.py) against the dense matmul of the same weight.

Matrices: a Llama-2-7B MLP shape (4096 x 11008, random weights) and one decoder layer of the
default model (its seven Linears, real weights), each with a three-tier mask (|W| ranking,
0.35/0.45/0.2, b = 16, k = 15). Inputs of batch 1 and 64 tokens. Prints median milliseconds
and the ratio hybrid / dense (> 1: the hybrid path is slower), measured in this run.

On the CPU (float32) both run in torch: dense `F.linear(x, W)` against `tiered_matmul` from the
tiered tensors. With CUDA (float16) it adds: the 2:4 tiles as one torch semi-structured
sparse matrix (`to_sparse_semi_structured`, the other tiles zero) plus the dense and top-k
tiles as one dense matrix (the 2:4 tiles zero), against dense; and uniform 2:4 of the whole
matrix as the reference of what the sparse tensor cores give. `--device cuda` fails with one
line when CUDA is absent.

    python scripts/bench_hybrid_matmul.py
    python scripts/bench_hybrid_matmul.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from lib.pruning.masks import expand_tier_map, nm_keep, three_tier_mask
from lib.tiered.format import encode_tiered
from lib.tiered.matmul import tiered_matmul
from lib.tiered.tier_map import DEFAULT_BLOCK_SIZE, DEFAULT_TOPK_PER_BLOCK, NM

BATCHES = (1, 64)


def median_ms(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of fn() in ms (after one warm-up; CUDA synchronized around each call)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def default_model_layer(layer: int) -> dict[str, torch.Tensor]:
    """The seven Linear weights of one decoder layer of the default model (float32), read from its safetensors."""
    from safetensors import safe_open

    from lib.models.loading import DEFAULT_MODEL, resolve_model_path

    path = next(Path(resolve_model_path(DEFAULT_MODEL)).glob("*.safetensors"))
    prefix = f"model.layers.{layer}."
    with safe_open(str(path), framework="pt") as f:
        return {k[len(prefix):]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix) and k.endswith("proj.weight")}


def semi_structured_path(weight: torch.Tensor, tier_map: torch.Tensor):
    """CUDA: (the 2:4 tiles as a semi-structured sparse matrix, the other tiles dense), or a reason string."""
    try:
        from torch.sparse import to_sparse_semi_structured

        nm = expand_tier_map(tier_map, DEFAULT_BLOCK_SIZE, *weight.shape).to(weight.device) == NM
        return to_sparse_semi_structured(torch.where(nm, weight, 0)), torch.where(nm, 0, weight)
    except (RuntimeError, ValueError, ImportError) as err:  # shape/dtype limits of the installed kernels
        return f"semi-structured unavailable: {str(err).splitlines()[0]}"


def bench_group(label: str, weights: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype, repeats: int) -> None:
    """Time dense vs hybrid for all `weights` together (summed over the matrices), per batch size."""
    prepared = []
    for weight in weights.values():
        keep, tier_map = three_tier_mask(weight, None)
        pruned = (weight * keep).to(device, dtype)
        encoded = {k: v.to(device) for k, v in encode_tiered(pruned, tier_map, DEFAULT_BLOCK_SIZE, DEFAULT_TOPK_PER_BLOCK).items()}
        prepared.append((pruned, tier_map, encoded))
    for batch in BATCHES:
        inputs = [torch.randn(batch, w.shape[1], device=device, dtype=dtype) for w, _, _ in prepared]
        dense = median_ms(lambda: [F.linear(x, w) for x, (w, _, _) in zip(inputs, prepared)], repeats, device)
        hybrid = median_ms(lambda: [tiered_matmul(x, e, tuple(w.shape), DEFAULT_BLOCK_SIZE) for x, (w, _, e) in zip(inputs, prepared)], repeats, device)
        line = f"{label:<34}{batch:>6}{dense:>11.3f}{hybrid:>12.3f}{hybrid / dense:>10.1f}"
        if device.type == "cuda":
            line += cuda_columns(prepared, inputs, dense, repeats, device)
        print(line, flush=True)


def cuda_columns(prepared, inputs, dense_ms: float, repeats: int, device: torch.device) -> str:
    """Semi-structured 2:4 tiles + dense rest, and uniform 2:4, as ms and ratio to dense."""
    paths = [semi_structured_path(w, t) for w, t, _ in prepared]
    reason = next((p for p in paths if isinstance(p, str)), None)
    if reason:
        return f"  ({reason})"
    try:
        uniform = [torch.sparse.to_sparse_semi_structured(w * nm_keep(w.abs().float(), 2, 4)) for w, _, _ in prepared]
        split = median_ms(lambda: [F.linear(x, s) + F.linear(x, r) for x, (s, r) in zip(inputs, paths)], repeats, device)
        two_four = median_ms(lambda: [F.linear(x, s) for x, s in zip(inputs, uniform)], repeats, device)
    except (RuntimeError, ValueError) as err:
        return f"  (semi-structured matmul failed: {str(err).splitlines()[0]})"
    return f"{split:>12.3f}{split / dense_ms:>8.2f}{two_four:>12.3f}{two_four / dense_ms:>8.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layer", type=int, default=0, help="decoder layer of the default model to time")
    parser.add_argument("--skip_default_model", action="store_true", help="only the 4096 x 11008 matrix")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available; run with --device cpu", file=sys.stderr)
        return 2
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} CPU threads, {str(dtype)[6:]}, median of {args.repeats}; "
          "ratio = hybrid / dense (> 1: slower)")
    header = f"{'matrices':<34}{'batch':>6}{'dense ms':>11}{'hybrid ms':>12}{'ratio':>10}"
    if device.type == "cuda":
        header += f"{'2:4sp+rest ms':>12}{'ratio':>8}{'unif 2:4 ms':>12}{'ratio':>8}"
    print(header)
    bench_group("4096 x 11008 (random)", {"w": torch.randn(4096, 11008)}, device, dtype, args.repeats)
    if not args.skip_default_model:
        bench_group(f"default model layer {args.layer} (7 Linears)", default_model_layer(args.layer), device, dtype, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
