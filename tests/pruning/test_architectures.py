"""The driver on tiny random models of many decoder families, found by rule (no model_type table).

Every config has sequences longer than its sliding window and, where the family has them,
alternating sliding-window and global layers, so a driver that replays one layer's
attention mask or rotary embeddings to every layer fails here.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import lib.pruning.driver
import main_block_three_tier as cli
from lib.models.arch import decoder_layers_path, decoder_linears, get_decoder_layers, measure_sparsity
from lib.pruning.capture import capture_layer_inputs, run_layer
from lib.pruning.driver import PruneConfig, prune_model
from lib.pruning.masks import tier_counts
from tests.helpers import SAMPLE_DATA, check_structure

WINDOW = 8  # sliding window of every config that has one; samples are 3x longer
SMALL = dict(vocab_size=400, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=3)
SWA = dict(sliding_window=WINDOW, max_window_layers=1, use_sliding_window=True)  # Qwen: layer 0 global, the rest sliding
ALTERNATING = ["sliding_attention", "full_attention"] * 2

# family: (config class, CausalLM class, config kwargs, decoder path)
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}, "model.layers"),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": WINDOW}, "model.layers"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", SWA, "model.layers"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**SWA, "head_dim": 8}, "model.layers"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"sliding_window": WINDOW, "head_dim": 8}, "model.layers"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                    {"sliding_window": WINDOW, "head_dim": 8, "layer_types": ALTERNATING}, "model.layers"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"sliding_window": WINDOW}, "model.layers"),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"intermediate_size": 64}, "gpt_neox.layers"),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}, "model.layers"),
    "opt": ("OPTConfig", "OPTForCausalLM",
            {"ffn_dim": 48, "word_embed_proj_dim": 32, "intermediate_size": None}, "model.decoder.layers"),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  {**SWA, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                   "shared_expert_intermediate_size": 48}, "model.layers"),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                {"sliding_window": WINDOW, "num_local_experts": 4, "num_experts_per_tok": 2}, "model.layers"),
}
MOE = {"qwen2_moe", "mixtral"}


def make_model(arch: str, seed: int = 0):
    import transformers

    config_class, model_class, extra, _ = ARCHS[arch]
    kwargs = {k: v for k, v in {**SMALL, **extra}.items() if v is not None}
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**kwargs)
    return getattr(transformers, model_class)(config).eval()


def samples(n=5, length=3 * WINDOW, seed=0):
    """Calibration ids [1, L]: two batch shapes with the default batch size 2 ([2, 24] and [1, 24]), plus a shorter one."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 400, (1, length), generator=g) for _ in range(n)] + [torch.randint(4, 400, (1, 17), generator=g)]


def reference_outputs(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """Each decoder layer's output in the model's own forward: output_hidden_states[1:L] and the last layer's output.

    transformers replaces the last hidden state by the final norm's output, so the last layer's
    own output is taken with a forward hook.
    """
    last = []
    handle = get_decoder_layers(model)[-1].register_forward_hook(lambda m, a, out: last.append(out))
    try:
        with torch.no_grad():
            states = model(ids, output_hidden_states=True, use_cache=False).hidden_states
    finally:
        handle.remove()
    return list(states[1:-1]) + last


def layer_kinds(model) -> list[str]:
    return list(getattr(model.config, "layer_types", None) or ["full_attention"] * model.config.num_hidden_layers)


@pytest.mark.parametrize("arch", ARCHS)
def test_discovery_by_rule(arch):
    model = make_model(arch)
    assert decoder_layers_path(model) == ARCHS[arch][3]
    linears = decoder_linears(model)
    assert len(linears) == 4 and all(linears)
    names = {n for layer in linears for n in layer}
    assert not any(n.endswith(("gate", "router")) for n in names), "MoE routers and gates are never pruned"
    if arch == "qwen2_moe":
        assert "mlp.shared_expert.down_proj" in names


@pytest.mark.parametrize("arch", ARCHS)
def test_driver_with_nothing_pruned_matches_the_forward(arch, monkeypatch):
    """Ratios 1 0 0: the hidden states prune_model propagates equal the model's own layer outputs."""
    model = make_model(arch)
    ids = samples()
    if arch in ("gemma2", "gemma3_text", "qwen2", "qwen3", "qwen2_moe"):
        kinds = layer_kinds(model)
        assert "sliding_attention" in kinds and "full_attention" in kinds, "the config must mix layer types"
    batch_ids = [torch.cat(ids[:2]), torch.cat(ids[2:4]), ids[4], ids[5]]
    reference = [reference_outputs(model, b) for b in batch_ids]
    propagated = []
    real_run_layer = lib.pruning.driver.run_layer

    def recording_run_layer(layer, batches):
        propagated.append(real_run_layer(layer, batches))
        return propagated[-1]

    monkeypatch.setattr(lib.pruning.driver, "run_layer", recording_run_layer)
    before = {n: p.clone() for n, p in model.named_parameters()}
    prune_model(model, ids, PruneConfig(ratios=(1, 0, 0), calib_batch_size=2), progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "ratios 1 0 0 prune nothing"
    assert len(propagated) == 4 and [h.shape[:2] for h in propagated[0]] == [(2, 24), (2, 24), (1, 24), (1, 17)]
    for i, outputs in enumerate(propagated):
        for b, out in enumerate(outputs):
            torch.testing.assert_close(out, reference[b][i], rtol=1e-5, atol=1e-5, msg=f"layer {i} batch {b}")


def test_replaying_one_layers_arguments_is_caught():
    """The old driver's bug: layer 0's mask and rotary embeddings replayed to a global layer change its output."""
    model = make_model("gemma3_text")
    ids = samples(n=2)[:2]
    hidden, layer_args = capture_layer_inputs(model, ids, batch_size=2)
    sliding, full = layer_args.per_layer[0][0][1], layer_args.per_layer[1][0][1]
    assert full["attention_mask"] is None or not torch.equal(sliding["attention_mask"], full["attention_mask"])  # sdpa: None = causal
    assert not torch.equal(sliding["position_embeddings"][0], full["position_embeddings"][0])  # local vs global rope
    assert layer_args.per_layer[0][0][1]["attention_mask"] is layer_args.per_layer[2][0][1]["attention_mask"], "stored once per type"
    reference = reference_outputs(model, torch.cat(ids))
    layers = get_decoder_layers(model)
    first = run_layer(layers[0], layer_args.batches(0, hidden))
    right = run_layer(layers[1], layer_args.batches(1, first))[0]
    wrong = run_layer(layers[1], layer_args.batches(0, first))[0]
    torch.testing.assert_close(right, reference[1], rtol=1e-5, atol=1e-5)
    assert (wrong - reference[1]).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ARCHS)
def test_three_tier_prune_has_exact_counts(arch):
    model = make_model(arch)
    before = {n: p.clone() for n, p in model.named_parameters()}
    result = prune_model(model, samples(), PruneConfig(tier_scope="row", calib_batch_size=2), progress=False)
    prefix = ARCHS[arch][3]
    expected = {f"{prefix}.{i}.{n}" for i, layer in enumerate(decoder_linears(model)) for n in layer}
    assert set(result.tier_maps) == expected and len(result.matrices) == len(expected)
    for path, tier_map in result.tier_maps.items():
        counts = tier_counts(tier_map.numel(), (0.35, 0.45, 0.2))
        assert tuple((tier_map == t).sum().item() for t in range(3)) == counts, path
        check_structure(model.get_submodule(path).weight != 0, tier_map, 16, 15)
    unpruned = result.unpruned
    if arch in MOE:  # fused 3-D expert tensors and routers stay dense, and the result says how much
        assert unpruned["share"] > 0.3 and any("experts" in n for n in unpruned["names"])
        for name, count in unpruned["names"].items():
            assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n.endswith(name))
    else:
        assert unpruned == {"share": 0.0, "weights": 0, "names": {}}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("archs")
    for arch in ARCHS:
        make_model(arch).save_pretrained(root / arch)
        tokenizer.save_pretrained(root / arch)
    return root


@pytest.mark.parametrize("arch", ARCHS)
def test_cli_prunes_and_the_model_reloads(arch, saved_models, tmp_path):
    out = tmp_path / "run"
    args = ["--model", str(saved_models / arch), "--data_dir", str(SAMPLE_DATA), "--nsamples", "4", "--seqlen", "32",
            "--eval_windows", "2", "--device", "cpu", "--prune_method", "sparsegpt", "--owl",
            "--save", str(out / "results"), "--save_model", str(out / "model")]
    assert cli.main(args) == 0
    report = json.loads((out / "results" / "results.json").read_text())
    assert report["perplexity"]["ppl"] > 1 and (report["unpruned"]["share"] > 0) == (arch in MOE)
    reloaded = AutoModelForCausalLM.from_pretrained(out / "model")
    assert type(reloaded).__name__ == ARCHS[arch][1]
    assert report["sparsity"]["sparsity"] == pytest.approx(measure_sparsity(reloaded)["sparsity"])
    assert report["sparsity"]["sparsity"] > 0.3


def test_layers_the_model_does_not_call_are_refused():
    model = make_model("llama")
    model.config.num_hidden_layers = 3  # the model's loop runs layers[:3] of its 4
    with pytest.raises(ValueError, match="called 3 of its 4 decoder layers"):
        prune_model(model, samples(), PruneConfig(), progress=False)
    assert "forward" not in vars(get_decoder_layers(model)[0]), "the layers' own forward is restored"
