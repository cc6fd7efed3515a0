"""The tiered and bitmask encodings (lib/tiered/format.py), compressed model directories (lib/tiered/checkpoint.py), cost (lib/tiered/cost.py)."""

import pytest
import torch

from lib.models.arch import decoder_linear_weights
from lib.pruning.driver import PruneConfig
from lib.pruning.masks import three_tier_mask
from lib.tiered.checkpoint import encode_state_dict, load_tiered_model, save_compressed
from lib.tiered.cost import bitmask_cost, model_cost, tiered_cost
from lib.tiered.format import decode_bitmask, decode_tiered, encode_bitmask, encode_tiered
from lib.tiered.tier_map import DENSE, NM, TOPK, TierMetadata
from tests.helpers import bits, make_tokenizer, prune_tiny_llama, state_bits

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiered_round_trip_is_bit_exact_with_partial_edge_tiles(dtype):
    torch.manual_seed(0)
    weight = torch.randn(40, 88).to(dtype)  # 3 x 6 tiles of 16, the last row and column partial
    keep, tier_map = three_tier_mask(weight.float(), None, (0.3, 0.4, 0.3), 16, 15)
    pruned = weight.masked_fill(~keep, 0)  # as the driver writes pruned weights: +0.0
    encoded = encode_tiered(pruned, tier_map, 16, 15)
    n = torch.bincount(tier_map.flatten().long(), minlength=3).tolist()
    assert encoded["dense"].shape == (n[DENSE], 16, 16) and encoded["dense"].dtype == dtype
    assert encoded["nm_values"].shape == (n[NM], 16, 8) and encoded["nm_meta"].shape == (n[NM], 32)
    assert encoded["topk_values"].shape == (n[TOPK], 15) and encoded["topk_positions"].dtype == torch.uint8
    assert torch.equal(bits(decode_tiered(encoded, (40, 88), 16)), bits(pruned))
    assert torch.equal(bits(decode_bitmask(encode_bitmask(pruned), (40, 88))), bits(pruned))


def test_nm_metadata_and_topk_positions_by_hand():
    weight = torch.tensor([[0.0, 1, 0, 2], [3, 0, 4, 0], [5, 6, 0, 0], [0, 0, 7, 8]])  # one 4 x 4 tile
    nm = encode_tiered(weight, torch.tensor([[NM]], dtype=torch.uint8), 4, 3)
    # rows keep columns (1, 3), (0, 2), (0, 1), (2, 3): nibbles 1|3<<2 = 13, 8, 4, 14; two per byte, low first
    assert nm["nm_meta"].tolist() == [[13 | 8 << 4, 4 | 14 << 4]]
    assert nm["nm_values"].tolist() == [[[1, 2], [3, 4], [5, 6], [7, 8]]]
    sparse = torch.zeros(4, 4)
    sparse[1, 2], sparse[3, 0] = -1.0, 2.0
    topk = encode_tiered(sparse, torch.tensor([[TOPK]], dtype=torch.uint8), 4, 3)
    # positions row * 4 + col, ascending; the third slot stores a zero at the lowest free position
    assert topk["topk_positions"].tolist() == [[0, 6, 12]] and topk["topk_values"].tolist() == [[0.0, -1.0, 2.0]]
    assert torch.equal(decode_tiered(topk, (4, 4), 4), sparse)


def test_bitmask_bits_are_least_significant_first():
    weight = torch.zeros(2, 10)
    weight[0, 0], weight[0, 9], weight[1, 3] = 1.0, 2.0, 3.0
    encoded = encode_bitmask(weight)
    assert encoded["bitmask"].tolist() == [[1, 2], [8, 0]] and encoded["values"].tolist() == [1.0, 2.0, 3.0]


def test_weights_that_break_the_tier_map_are_refused():
    weight = torch.ones(4, 4)
    with pytest.raises(ValueError, match="do not follow the tier map"):
        encode_tiered(weight, torch.tensor([[NM]], dtype=torch.uint8), 4, 3)
    with pytest.raises(ValueError, match="tier map has shape"):
        encode_tiered(torch.zeros(8, 8), torch.zeros(1, 1, dtype=torch.uint8), 4, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_three_tier_model_round_trip(dtype, tmp_path):
    model, tier_maps = prune_tiny_llama(PruneConfig(), dtype)  # MLP width 88: partial edge tiles
    save_compressed(model, make_tokenizer(), tmp_path, decoder_linear_weights(model), tier_maps)
    loaded = load_tiered_model(tmp_path)
    assert type(loaded).__name__ == "LlamaForCausalLM" and loaded.dtype == dtype
    expected, got = state_bits(model), state_bits(loaded)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    if dtype == torch.float32:  # model.to(bf16/fp16) also casts the rotary buffer, which a fresh model keeps in fp32
        ids = torch.randint(0, 400, (1, 12))
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_two_four_model_without_tier_map_is_stored_as_nm_tiles(tmp_path):
    model, tier_maps = prune_tiny_llama(PruneConfig(sparsity_type="2:4"))
    assert not tier_maps
    tensors, metadata = encode_state_dict(model, decoder_linear_weights(model), {}, TierMetadata(16, topk_per_block=15))
    assert {m["encoding"] for m in metadata["matrices"].values()} == {"tiered"} and len(metadata["matrices"]) == 14
    assert all(int(t.max()) == NM for k, t in tensors.items() if k.endswith(".tier_map"))
    save_compressed(model, None, tmp_path, decoder_linear_weights(model), {})
    assert all(torch.equal(a, b) for a, b in zip(state_bits(model).values(), state_bits(load_tiered_model(tmp_path)).values()))


def test_cost_matches_the_stored_tensors(tmp_path):
    model, tier_maps = prune_tiny_llama(PruneConfig())
    cost = model_cost(model, decoder_linear_weights(model), tier_maps)
    tensors, metadata = encode_state_dict(model, decoder_linear_weights(model), tier_maps, TierMetadata(16, topk_per_block=15))
    decoder = [k for k in tensors if k.rsplit(".", 1)[0] in metadata["matrices"]]
    assert sum(tensors[k].nbytes for k in decoder) == cost["decoder_bytes"]
    assert cost["encodings"] == {"tiered": 14, "bitmask": 0, "dense": 0}
    # per tile: dense 256 MACs, 2:4 128, top-k 15
    q = tier_maps["model.layers.0.self_attn.q_proj"]
    assert tiered_cost(q, 16, 15, 4)["macs"] == 5 * 256 + 7 * 128 + 4 * 15
    assert tiered_cost(q, 16, 15, 4)["bytes"] == 16 + 5 * 1024 + 7 * (512 + 32) + 4 * 15 * 5
    bitmask, _ = encode_state_dict(model, decoder_linear_weights(model), tier_maps, TierMetadata(16, topk_per_block=15),
                                    encoding="bitmask")
    nnz = {k: int((p != 0).sum()) for k, p in model.state_dict().items() if k in metadata["matrices"]}
    assert sum(bitmask[k].nbytes for k in bitmask if k.rsplit(".", 1)[0] in nnz) == sum(
        bitmask_cost(tuple(model.state_dict()[k].shape), n, 4)["bytes"] for k, n in nnz.items())
    unstructured, _ = prune_tiny_llama(PruneConfig(sparsity_type="unstructured"))
    u = model_cost(unstructured, decoder_linear_weights(unstructured), {})
    nnz = sum(int((p != 0).sum()) for n, p in unstructured.named_parameters() if "layers" in n and p.dim() == 2)
    assert u["encodings"]["bitmask"] == 14 and u["decoder_macs"] == nnz
    assert bitmask_cost((64, 88), 10, 2) == {"bytes": 64 * 11 + 20, "macs": 10}


def test_large_tiles_use_int16_positions():
    torch.manual_seed(2)
    weight = torch.randn(30, 50)
    keep, tier_map = three_tier_mask(weight, None, (0.2, 0.4, 0.4), 20, 300)
    pruned = weight.masked_fill(~keep, 0)
    encoded = encode_tiered(pruned, tier_map, 20, 300)
    assert encoded["topk_positions"].dtype == torch.int16 and int(encoded["topk_positions"].max()) > 255
    assert torch.equal(bits(decode_tiered(encoded, (30, 50), 20)), bits(pruned))
