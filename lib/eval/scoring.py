"""Token log-likelihoods through the output head, a chunk of positions at a time.

A causal LM's forward materializes logits for every position ([B, T, V], V = 49152 for
SmolLM2, 256k for Gemma), and log_softmax / cross_entropy copy them again in float32.
Scoring needs only some positions, and of each only the log-normalizer and the target's
logit: here the decoder's last hidden states go through the head in chunks of positions,
in the model's dtype, and only the per-token results are kept (float32).
Letters: B batch, T positions, H hidden size, V vocabulary, N scored positions.
"""

from __future__ import annotations

import torch
from torch import nn

LOGITS_PER_CHUNK = 2**25  # logits materialized at once (128 MiB in float32): the head weight is read once per chunk


def final_hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder's output (after its final norm), what the head reads: [B, T] ids -> [B, T, H]."""
    return model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits as the model's own forward computes them: [..., H] -> float32 [..., V]."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma 2
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


@torch.no_grad()
def score_tokens(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and whether the target is the argmax, at N positions.

    hidden: [N, H] final hidden states of the positions that predict `targets` (long [N]).
    Returns (logprob float32 [N], greedy bool [N]).
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    step = max(1, LOGITS_PER_CHUNK // vocab)
    logprobs, greedy = [], []
    for start in range(0, hidden.shape[0], step):
        logits = head_logits(model, hidden[start : start + step])  # (n, V)
        target = targets[start : start + step, None]  # (n, 1)
        logprobs.append(logits.gather(-1, target)[:, 0] - logits.logsumexp(-1))
        greedy.append(logits.argmax(-1) == target[:, 0])
    return torch.cat(logprobs), torch.cat(greedy)
