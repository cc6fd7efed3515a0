"""Chunked scoring through the output head against the model's own full logits."""

import math

import pytest
import torch

import lib.eval.scoring
from lib.eval.perplexity import perplexity
from lib.eval.scoring import final_hidden_states, score_tokens

from tests.helpers import make_llama, make_opt


def make_gemma2():
    """Tiny Gemma 2: its forward soft-caps the logits after the head."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=400, hidden_size=64, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, final_logit_softcapping=0.5,
        bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )
    return Gemma2ForCausalLM(config).eval()


MAKERS = {"llama": make_llama, "opt": make_opt, "gemma2": make_gemma2}


@torch.no_grad()
def reference_perplexity(model, input_ids, seqlen, batch_size):
    """The full-logits computation as first written: (total NLL, per-window mean NLL)."""
    n_windows = input_ids.shape[1] // seqlen
    windows = input_ids[0, : n_windows * seqlen].view(n_windows, seqlen)
    total, per_window = 0.0, []
    for start in range(0, n_windows, batch_size):
        batch = windows[start : start + batch_size]
        logits = model(batch).logits.float()  # (B, T, V)
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")  # (B, T-1)
        per_window += losses.mean(1).tolist()
        total += losses.sum().item()
    return total / (n_windows * (seqlen - 1)), per_window


@pytest.mark.parametrize("arch", MAKERS)
def test_perplexity_equals_full_logits(arch, monkeypatch):
    monkeypatch.setattr(lib.eval.scoring, "LOGITS_PER_CHUNK", 400 * 7)  # 7 positions per chunk: chunks cross windows
    model = MAKERS[arch]()
    ids = torch.randint(4, 400, (1, 5 * 32 + 9), generator=torch.Generator().manual_seed(1))
    nll, per_window = reference_perplexity(model, ids, 32, batch_size=2)
    result = perplexity(model, ids, 32, batch_size=2, progress=False)
    assert result["n_windows"] == 5 and result["n_tokens"] == 5 * 31
    assert math.isclose(result["nll"], nll, rel_tol=1e-5) and math.isclose(result["ppl"], math.exp(nll), rel_tol=1e-5)
    assert result["window_nll"] == pytest.approx(per_window, rel=1e-5)
    assert len(set(result["window_nll"])) == 5


@pytest.mark.parametrize("arch", MAKERS)
def test_score_tokens_equals_log_softmax_of_the_model_logits(arch, monkeypatch):
    monkeypatch.setattr(lib.eval.scoring, "LOGITS_PER_CHUNK", 400 * 3)
    model = MAKERS[arch]()
    ids = torch.randint(4, 400, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits.float(), -1)[:, :-1]  # (B, T-1, V)
        hidden = final_hidden_states(model, ids)[:, :-1].reshape(-1, 64)
    targets = logprobs.argmax(-1).flatten()
    targets[::2] = ids[:, 1:].flatten()[::2]  # half the targets are the argmax, half the real next tokens
    logprob, greedy = score_tokens(model, hidden, targets)
    expected = logprobs.reshape(-1, 400).gather(1, targets[:, None])[:, 0]
    assert torch.allclose(logprob, expected, atol=1e-5)
    assert torch.equal(greedy, logprobs.reshape(-1, 400).argmax(-1) == targets) and greedy[1::2].all()
