"""The tiered format through the CLIs: scripts/compress_model.py and main_block_three_tier.py --save_compressed."""

import subprocess
import sys

import pytest
import torch

from lib.pruning.driver import PruneConfig
from lib.tiered.checkpoint import COMPRESSED_FILE, load_tiered_model
from tests.helpers import REPO, SAMPLE_DATA, make_tokenizer, prune_tiny_llama, state_bits


def test_compress_model_script(tmp_path):
    model, tier_maps = prune_tiny_llama(PruneConfig(tier_scope="row"))
    from lib.models.loading import save_model
    from lib.tiered.tier_map import TIER_MAP_FILE, TierMetadata, save_tier_maps

    save_model(model, make_tokenizer(), tmp_path / "pruned")
    save_tier_maps(tmp_path / "pruned" / TIER_MAP_FILE, tier_maps, TierMetadata(16, topk_per_block=15))
    script = REPO / "scripts" / "compress_model.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "pruned"), str(tmp_path / "out"), "--verify"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "verified" in run.stderr and (tmp_path / "out" / COMPRESSED_FILE).stat().st_size < (tmp_path / "pruned" / "model.safetensors").stat().st_size
    # the output rule: its own earlier output is replaced, a directory it did not write is refused in one line
    again = subprocess.run([sys.executable, str(script), str(tmp_path / "pruned"), str(tmp_path / "out")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = subprocess.run([sys.executable, str(script), str(tmp_path / "pruned"), str(tmp_path / "mine")], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.startswith("error: out ") and len(refused.stderr.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_cli_save_compressed_matches_save_model(tiny_llama_dir, tmp_path):
    import main_block_three_tier as cli
    from transformers import AutoModelForCausalLM

    args = ["--model", str(tiny_llama_dir), "--data_dir", str(SAMPLE_DATA), "--nsamples", "2", "--seqlen", "32", "--device", "cpu",
            "--no_eval", "--save_model", str(tmp_path / "model"), "--save_compressed", str(tmp_path / "tiered")]
    assert cli.main(args) == 0
    expected = state_bits(AutoModelForCausalLM.from_pretrained(tmp_path / "model"))
    got = state_bits(load_tiered_model(tmp_path / "tiered"))
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert (tmp_path / "tiered" / "tier_map.safetensors").is_file() and (tmp_path / "tiered" / "tokenizer.json").is_file()
    # every CLI's loader (lib.models.loading.load_model) opens the tiered directory too
    from lib.models.loading import load_model

    model, tokenizer = load_model(str(tmp_path / "tiered"), device="cpu")
    assert state_bits(model).keys() == expected.keys() and all(torch.equal(expected[k], state_bits(model)[k]) for k in expected)
    assert tokenizer.pad_token_id is not None and not model.training


def test_compress_model_tiles_by_the_tier_map_metadata(tmp_path):
    """compress_model.py takes block size and top-k from the tier map's TierMetadata (no literal fallbacks);
    --block_size only tiles matrices without a tier map and must agree with a tier map's."""
    from lib.tiered.tier_map import TIER_MAP_FILE, TierMetadata, save_tier_maps
    from scripts.compress_model import read_tier_maps

    maps = {"model.layers.0.mlp.up_proj": torch.zeros(2, 3, dtype=torch.uint8)}
    save_tier_maps(tmp_path / TIER_MAP_FILE, maps, TierMetadata(8, topk_per_block=20))
    for flag in (None, 8):
        loaded, tiers = read_tier_maps(tmp_path, flag)
        assert tiers == TierMetadata(8, None, 20) and list(loaded) == list(maps)
    with pytest.raises(ValueError, match=r"^--block_size 16 differs from the tier map's 8; drop the flag$"):
        read_tier_maps(tmp_path, 16)
    (tmp_path / "plain").mkdir()
    assert read_tier_maps(tmp_path / "plain", None) == ({}, TierMetadata(16, None, 15))
    assert read_tier_maps(tmp_path / "plain", 32) == ({}, TierMetadata(32, None, 15))
