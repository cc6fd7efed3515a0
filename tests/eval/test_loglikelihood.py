"""One forward per shared context (lib.eval.loglikelihood) and token-sized batches (lib.eval.batching): the packed
rows score exactly what one row per (context, continuation) scores, and results come back in input order."""

from __future__ import annotations

import random

import pytest
import torch

from lib.eval import loglikelihood
from lib.eval.batching import row_batches, token_batches
from lib.eval.loglikelihood import block_attention_mask, can_pack, continuation_logprobs, pack_rows, score_rows
from tests.helpers import make_llama, make_opt

WORDS = "The quick brown fox jumps over the lazy dog Question Answer Context Natalia sold clips yes no".split()


def requests(seed: int = 0, n_contexts: int = 6) -> tuple[list[str], list[str]]:
    """Questions of 1-4 choices sharing a context: single-token choices, multi-token ones, and mixes."""
    rng = random.Random(seed)
    prompts, continuations = [], []
    for _ in range(n_contexts):
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(2, 40)))
        for _ in range(rng.randint(1, 4)):
            prompts.append(prompt)
            continuations.append(" " + " ".join(rng.choices(WORDS, k=rng.randint(1, 6))))
    prompts += ["yes", "no"]  # a context of one token
    continuations += [" yes", " no"]
    return prompts, continuations


def per_pair(model, tokenizer, prompts, continuations, monkeypatch, batch_tokens=64):
    """The reference: every (context, continuation) its own row context + continuation (no packing)."""
    with monkeypatch.context() as patch:
        patch.setattr(loglikelihood, "can_pack", lambda model: False)
        return continuation_logprobs(model, tokenizer, prompts, continuations, batch_tokens, progress=False)


def test_token_batches_fill_a_budget_longest_first_and_cover_every_index():
    lengths = [5, 30, 12, 12, 3, 50, 7, 12]
    batches = token_batches(lengths, 36)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert [i for batch in batches for i in batch] == sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable
    # 50 alone (over budget); 30 (2 x 30 > 36); 3 x 12 = 36; 7, 5 and 3 each below 0.9 of the one before
    assert batches == [[5], [1], [2, 3, 7], [6], [0], [4]]
    assert token_batches(lengths, 36, min_fill=0.0) == [[5], [1], [2, 3, 7], [6, 0, 4]]  # 3 x 7 <= 36
    assert token_batches([10, 9, 9, 8], 100) == [[0, 1, 2], [3]]  # 8 < 0.9 x 10
    assert row_batches(lengths, 3) == [[5, 1, 2], [3, 7, 6], [0, 4]]
    with pytest.raises(ValueError, match="--batch_tokens must be at least 1"):
        token_batches(lengths, 0)


def test_pack_rows_lays_out_context_then_each_continuation_but_its_last_token():
    sequences = [([1, 2, 3], [7, 8, 9]), ([1, 2, 3], [5]), ([4, 5], [6, 7]), ([1, 2, 3], [6, 6])]
    shared, alone = pack_rows(sequences)
    assert shared.ids == [1, 2, 3, 7, 8, 6] and shared.positions == [0, 1, 2, 3, 4, 3]
    assert shared.segments == [0, 0, 0, 1, 1, 3]
    # request 0: token 7 at the context's last position (2), 8 at 7's (3), 9 at 8's (4); request 1 at position 2 only
    assert shared.scored == [(0, [2, 3, 4], [7, 8, 9]), (1, [2], [5]), (3, [2, 5], [6, 6])]
    assert alone.ids == [4, 5, 6, 7] and alone.scored == [(2, [1, 2], [6, 7])]  # one request: the plain row
    one_token = pack_rows([([1, 2], [7]), ([1, 2], [8]), ([1, 2], [9])])
    assert [row.ids for row in one_token] == [[1, 2]]  # every choice read from the context's last position
    assert len(pack_rows(sequences, pack=False)) == 4


def test_block_attention_mask():
    segments = torch.tensor([[0, 0, 1, 1, 2, -1]])
    valid = torch.tensor([[True] * 5 + [False]])
    expected = torch.tensor([[1, 0, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0],
                             [1, 1, 1, 0, 0, 0],
                             [1, 1, 1, 1, 0, 0],
                             [1, 1, 0, 0, 1, 0],   # segment 2 sees the context and itself, not segment 1
                             [1, 1, 0, 0, 0, 0]],  # padding attends the context only
                            dtype=torch.bool)
    assert torch.equal(block_attention_mask(segments, valid)[0, 0], expected)


@pytest.mark.parametrize("make, attention", [(make_llama, "sdpa"), (make_llama, "eager"), (make_opt, "sdpa")])
def test_packed_rows_score_what_one_row_per_pair_scores(tokenizer, monkeypatch, make, attention):
    model = make()
    model.set_attn_implementation(attention)
    assert can_pack(model)
    prompts, continuations = requests()
    packed = continuation_logprobs(model, tokenizer, prompts, continuations, 64, progress=False)
    reference = per_pair(model, tokenizer, prompts, continuations, monkeypatch)
    assert [p["n_tokens"] for p in packed] == [r["n_tokens"] for r in reference]
    assert [p["greedy"] for p in packed] == [r["greedy"] for r in reference]
    # the same sums up to float32 rounding: another kernel (a 4D mask) and another summation order
    assert [p["logprob"] for p in packed] == pytest.approx([r["logprob"] for r in reference], abs=2e-5)
    assert len({p["logprob"] for p in packed}) > len(prompts) // 2  # distinct values: the check can fail


def test_results_come_back_in_input_order_whatever_the_batches(tokenizer):
    model = make_llama()
    prompts, continuations = requests(seed=1)
    big = continuation_logprobs(model, tokenizer, prompts, continuations, 10**6, progress=False)
    one_row_each = continuation_logprobs(model, tokenizer, prompts, continuations, 1, progress=False)
    assert [r["logprob"] for r in one_row_each] == pytest.approx([r["logprob"] for r in big], abs=2e-5)
    shuffled = list(range(len(prompts)))
    random.Random(0).shuffle(shuffled)
    again = continuation_logprobs(model, tokenizer, [prompts[i] for i in shuffled], [continuations[i] for i in shuffled],
                                  10**6, progress=False)
    assert [again[shuffled.index(i)]["logprob"] for i in range(len(prompts))] == pytest.approx(
        [r["logprob"] for r in big], abs=2e-5)


def test_rows_of_one_request_are_the_models_own_forward(tokenizer):
    """Rows of one request each (answer NLLs) are context + continuation with the model's own padding mask."""
    model = make_llama()
    prompts, continuations = ["the quick brown fox", "Natalia sold", "yes no yes"], [" jumps", " 48 clips", " no"]
    sequences = [(tokenizer(p).input_ids, tokenizer(c, add_special_tokens=False).input_ids) for p, c in zip(prompts, continuations)]
    rows = pack_rows(sequences)
    scored = score_rows(model, rows, 3, tokenizer.pad_token_id, 10**6, progress=False)
    width = max(len(p) + len(c) for p, c in sequences)
    ids = torch.tensor([p + c + [tokenizer.pad_token_id] * (width - len(p) - len(c)) for p, c in sequences])
    mask = (torch.arange(width)[None] < torch.tensor([len(p) + len(c) for p, c in sequences])[:, None]).long()
    with torch.no_grad():
        logprobs = model(ids, attention_mask=mask).logits.log_softmax(-1)  # (B, T, V)
    for b, ((prompt, target), result) in enumerate(zip(sequences, scored)):
        expected = sum(logprobs[b, len(prompt) - 1 + j, t] for j, t in enumerate(target))
        assert result["logprob"] == pytest.approx(expected.item(), abs=1e-5)
