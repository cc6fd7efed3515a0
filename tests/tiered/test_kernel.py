"""The hybrid kernel (lib/tiered/kernel) against the dense product of the same pruned weight, its repacking,
and the exact fallback when the kernel cannot be built."""

import logging
import shutil

import pytest
import torch
import torch.nn.functional as F

from lib.pruning.masks import nm_keep, three_tier_mask
from lib.tiered.format import decode_bitmask, decode_tiered, encode_bitmask, encode_tiered, nm_tier_map
from lib.tiered.kernel import build
from lib.tiered.kernel.linear import HybridLinear
from lib.tiered.kernel.repack import csr_to_dense, repack_bitmask, repack_tiered, tiered_to_dense
from lib.tiered.tier_map import DENSE, NM, TOPK
from tests.helpers import default_model_weights

TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}


def tiered_case(shape, ratios, k=15, b=16, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    weight = torch.randn(*shape)
    keep, tier_map = three_tier_mask(weight, None, ratios, b, k)
    pruned = (weight * keep).to(dtype)
    return pruned, tier_map, encode_tiered(pruned, tier_map, b, k)


def check_product(module: HybridLinear, weight: torch.Tensor, n_tokens: int, bias=None):
    """module(x) equals x @ weight^T (+ bias), computed in float64 from the same (rounded) inputs."""
    dtype = weight.dtype
    x = torch.randn(n_tokens, weight.shape[1]).to(dtype)
    expected = x.double() @ weight.double().T + (0 if bias is None else bias.double())
    y = module(x)
    assert y.shape == (n_tokens, weight.shape[0]) and y.dtype == dtype
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(y.double(), expected, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, expected.abs().max().item()))
    y3 = module(x.reshape(1, n_tokens, -1))  # leading dims are kept
    assert y3.shape == (1, n_tokens, weight.shape[0]) and torch.equal(y3[0], y)


def test_the_kernel_builds_where_a_compiler_is_present():
    if shutil.which("c++") is None or shutil.which("ninja") is None:
        pytest.skip("no C++ compiler or ninja here: the fallback is what runs (tested below)")
    assert build.extension() is not None


@pytest.mark.parametrize("shape", [(40, 88), (17, 36), (64, 64), (5, 3)])
@pytest.mark.parametrize("ratios", [(0.35, 0.45, 0.2), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.0, 0.5),
                                    (0.0, 0.6, 0.4), (0.6, 0.4, 0.0)])
@pytest.mark.parametrize("n_tokens", [1, 3, 8, 13])
def test_tiered_equals_the_dense_product(shape, ratios, n_tokens):
    pruned, tier_map, encoded = tiered_case(shape, ratios)
    check_product(HybridLinear("tiered", encoded, shape, 16), pruned, n_tokens)


@pytest.mark.parametrize("k", [1, 15, 64, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_sizes_and_dtypes(k, dtype):
    pruned, tier_map, encoded = tiered_case((50, 70), (0.2, 0.3, 0.5), k=k, dtype=dtype, seed=k)
    assert set(tier_map.flatten().tolist()) == {DENSE, NM, TOPK}
    bias = torch.randn(50).to(dtype)
    for n_tokens in (1, 4, 9):
        check_product(HybridLinear("tiered", encoded, (50, 70), 16, bias), pruned, n_tokens, bias)


@pytest.mark.parametrize("block_size", [8, 32])
def test_other_block_sizes(block_size):
    pruned, _, encoded = tiered_case((70, 90), (0.3, 0.4, 0.3), k=20, b=block_size)
    check_product(HybridLinear("tiered", encoded, (70, 90), block_size), pruned, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_uniform_2_4_and_bitmask(dtype):
    torch.manual_seed(3)
    weight = torch.randn(45, 100)
    two_four = (weight * nm_keep(weight.abs(), 2, 4)).to(dtype)
    tier_map = nm_tier_map(two_four, 16)
    assert tier_map is not None and (tier_map == NM).all()
    unstructured = torch.where(torch.rand(45, 100) < 0.5, weight, 0.0).to(dtype)
    for n_tokens in (1, 8, 11):
        check_product(HybridLinear("tiered", encode_tiered(two_four, tier_map, 16, 15), (45, 100), 16), two_four, n_tokens)
        check_product(HybridLinear("bitmask", encode_bitmask(unstructured), (45, 100), 16), unstructured, n_tokens)


def test_empty_rows_and_an_all_zero_matrix():
    weight = torch.zeros(20, 40)
    weight[3, 5] = 2.0
    check_product(HybridLinear("bitmask", encode_bitmask(weight), (20, 40), 16), weight, 3)
    tier_map = torch.full((2, 3), TOPK, dtype=torch.uint8)
    check_product(HybridLinear("tiered", encode_tiered(weight, tier_map, 16, 15), (20, 40), 16), weight, 2)


def test_repack_round_trips():
    pruned, _, encoded = tiered_case((33, 47), (0.3, 0.4, 0.3), k=15)
    layout = repack_tiered(encoded, 16)
    assert torch.equal(tiered_to_dense(layout, (33, 47), 16), decode_tiered(encoded, (33, 47), 16))
    assert torch.equal(tiered_to_dense(layout, (33, 47), 16), pruned)
    assert layout["ptr"].shape == (3, 4) and layout["ptr"][:, -1].tolist() == [len(encoded[f]) for f in ("dense", "nm_values", "topk_values")]
    assert (layout["nm_index"].long().sort(1).values.diff(dim=1) >= 0).all()  # columns per row ascend within the tile
    unstructured = torch.where(torch.rand(30, 50) < 0.4, torch.randn(30, 50), 0.0)
    bitmask = encode_bitmask(unstructured)
    csr = repack_bitmask(bitmask, (30, 50))
    assert csr["cols"].dtype == torch.int16 and torch.equal(csr_to_dense(csr, (30, 50)), decode_bitmask(bitmask, (30, 50)))


@pytest.mark.real_model
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_default_model_matrix_pruned_by_the_toolkit(dtype):
    weight, = default_model_weights("model.layers.2.mlp.down_proj.weight")  # 576 x 1536
    keep, tier_map = three_tier_mask(weight, None)
    pruned = (weight * keep).to(dtype)
    module = HybridLinear("tiered", encode_tiered(pruned, tier_map, 16, 15), tuple(weight.shape), 16)
    for n_tokens in (1, 4):
        check_product(module, pruned, n_tokens)


def test_the_forced_fallback_is_exact_and_said_once(monkeypatch, caplog):
    monkeypatch.setenv(build.FORCE_ENV, "reference")
    monkeypatch.setattr(build, "_warned", [])
    pruned, _, encoded = tiered_case((40, 88), (0.35, 0.45, 0.2))
    with caplog.at_level(logging.WARNING, logger="lib.tiered.kernel.build"):
        modules = [HybridLinear("tiered", encoded, (40, 88), 16) for _ in range(3)]
    assert not any(m.uses_kernel for m in modules)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lib.tiered.matmul" in warnings[0] and "HYBRID_KERNEL=reference" in warnings[0]
    check_product(modules[0], pruned, 5)
    unstructured = torch.where(torch.rand(40, 88) < 0.5, torch.randn(40, 88), 0.0)
    fallback = HybridLinear("bitmask", encode_bitmask(unstructured), (40, 88), 16)
    assert not fallback.uses_kernel
    check_product(fallback, unstructured, 3)
    x = torch.randn(4, 88)
    torch.testing.assert_close(fallback(x), F.linear(x, unstructured), rtol=1e-5, atol=1e-5)
