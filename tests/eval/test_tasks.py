"""Generation, log-likelihoods, the generating and perplexity runners and the SQuAD / GSM8K / BoolQ tasks on tiny
random models (CPU, seconds); the multiple-choice framework is test_multiple_choice.py's, the eval CLI
tests/e2e/test_eval_cli.py's."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib.core.uncertainty import mean_stderr
from lib.data.prompts import boolq_prompt
from lib.eval.generate import answer_nll, evaluate_generate
from lib.eval.generation import generate_greedy
from lib.eval.loglikelihood import continuation_logprobs
from lib.eval.multiple_choice import evaluate_multiple_choice
from lib.eval.perplexity import perplexity, perplexity_report
from lib.eval.runner import check_tasks, evaluate_tasks, task_limit
from lib.eval.tasks.gsm8k import fewshot_prefix
from lib.eval.tasks.task import get
from tests.helpers import BOOLQ, GSM8K, SQUAD, make_llama, make_opt, write_task_data

PROMPTS = [
    "The quick brown fox",
    "Question: how many clips did Natalia sell in April and May?\nAnswer:",
    "A",
    "Context: A pruned network keeps its most important weights.\nQuestion: what does it keep?\nAnswer:",
]


def force_tokens(model: nn.Module, token_ids: list[int], boost: float = 100.0):
    """Hook the LM head so the given token ids get +boost logits everywhere; returns the hook handle."""
    def hook(module, inputs, output):
        output = output.clone()
        output[..., token_ids] += boost
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def evaluate_squad(model, tokenizer, examples, **options) -> dict:
    return evaluate_generate(model, tokenizer, get("squad"), examples, **options)


def evaluate_gsm8k(model, tokenizer, examples, **options) -> dict:
    return evaluate_generate(model, tokenizer, get("gsm8k"), examples, **options)


def uniform_logits(model: nn.Module):
    """Hook the LM head to output zeros: every next-token distribution is uniform over V."""
    return model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: torch.zeros_like(output))


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("make_model", [make_llama, make_opt], ids=["llama", "opt"])
def test_batched_generation_equals_one_at_a_time(make_model, tokenizer):
    model = make_model()
    batched = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=3, progress=False)
    single = [generate_greedy(model, tokenizer, [p], max_new_tokens=8, batch_size=1, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert any(batched)  # the random model does produce text


def test_generation_cuts_at_stop_string_and_eos(tiny_llama, tokenizer):
    free = generate_greedy(tiny_llama, tokenizer, PROMPTS[:1], max_new_tokens=10, progress=False)[0]
    stop = free[3:5]
    assert stop.strip()
    stopped = generate_greedy(tiny_llama, tokenizer, PROMPTS, max_new_tokens=10, stop_strings=[stop], batch_size=4, progress=False)
    assert stopped[0] == free[: free.find(stop)]
    assert all(stop not in text for text in stopped)

    handle = force_tokens(tiny_llama, [tokenizer.eos_token_id])
    try:
        assert generate_greedy(tiny_llama, tokenizer, PROMPTS, max_new_tokens=5, batch_size=2, progress=False) == [""] * len(PROMPTS)
    finally:
        handle.remove()


# ---------------------------------------------------------------- log-likelihood and task NLL


def test_continuation_logprobs_match_direct_forward(tiny_llama, tokenizer):
    prompts, answers = PROMPTS[:3], [" yes", " 72 clips", " unanswerable"]
    scored = continuation_logprobs(tiny_llama, tokenizer, prompts, answers, batch_tokens=24, progress=False)
    for prompt, answer, result in zip(prompts, answers, scored):
        prompt_ids = tokenizer(prompt).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logits = tiny_llama(ids).logits[0]  # (T, V), unpadded
        logprobs = torch.log_softmax(logits, -1)[len(prompt_ids) - 1 : -1]  # rows predicting the answer tokens
        expected = logprobs.gather(-1, torch.tensor(answer_ids)[:, None]).sum().item()
        assert result["n_tokens"] == len(answer_ids)
        assert result["logprob"] == pytest.approx(expected, abs=1e-4)


def test_answer_nll_uniform_model_is_log_vocab(tiny_llama, tokenizer):
    handle = uniform_logits(tiny_llama)
    try:
        result = answer_nll(tiny_llama, tokenizer, PROMPTS[:2], [" yes", " 1,234 dollars"], batch_tokens=20, progress=False)
    finally:
        handle.remove()
    n_expected = len(tokenizer(" yes", add_special_tokens=False).input_ids) + len(tokenizer(" 1,234 dollars", add_special_tokens=False).input_ids)
    assert result["n_tokens"] == n_expected
    assert result["nll"] == pytest.approx(math.log(tiny_llama.config.vocab_size), rel=1e-5)


def test_answer_nll_is_token_weighted(tiny_llama, tokenizer):
    answers = [" yes", " the quick brown fox jumps"]
    result = answer_nll(tiny_llama, tokenizer, PROMPTS[:2], answers, progress=False)
    scored = continuation_logprobs(tiny_llama, tokenizer, PROMPTS[:2], answers, progress=False)
    total = -sum(s["logprob"] for s in scored) / sum(s["n_tokens"] for s in scored)
    assert result["nll"] == pytest.approx(total)
    assert result["per_example"] == pytest.approx([-s["logprob"] / s["n_tokens"] for s in scored])


# ---------------------------------------------------------------- BoolQ


@pytest.mark.parametrize("forced, accuracy, yes_rate", [(" yes", 0.25, 1.0), (" no", 0.75, 0.0)])
def test_boolq_forced_answer_scores_the_label_rate(tiny_llama, tokenizer, forced, accuracy, yes_rate):
    forced_ids = tokenizer(forced, add_special_tokens=False).input_ids
    other = " no" if forced == " yes" else " yes"
    assert not set(forced_ids) & set(tokenizer(other, add_special_tokens=False).input_ids)
    handle = force_tokens(tiny_llama, forced_ids)
    try:
        result = evaluate_multiple_choice(tiny_llama, tokenizer, get("boolq"), BOOLQ, batch_tokens=40, progress=False)
    finally:
        handle.remove()
    # labels [T, F, F, F]: acc [1, 0, 0, 0] (forced yes) has sd 0.5 (ddof 1), se 0.5 / sqrt(4)
    assert result["metrics"] == {"acc": accuracy, "acc_stderr": pytest.approx(0.25), "acc_norm": accuracy,
                                 "acc_norm_stderr": pytest.approx(0.25), "yes_rate": yes_rate, "yes_rate_stderr": 0.0,
                                 "majority_rate": 0.75, "majority_rate_stderr": pytest.approx(0.25)}
    assert result["counts"] == {"total": 4}
    assert [s["choice"] for s in result["samples"]] == [int(forced == " yes")] * 4
    assert result["per_example"]["yes_rate"] == dict.fromkeys("0123", yes_rate)
    assert result["per_example"]["majority_rate"] == {"0": 0.0, "1": 1.0, "2": 1.0, "3": 1.0}  # "no" is the majority


def test_boolq_prompt_layout():
    assert boolq_prompt("P.", "is it") == "P.\nQuestion: is it?\nAnswer:"


# ---------------------------------------------------------------- SQuAD and GSM8K


def test_squad_abstaining_model_gets_exactly_the_no_answer_share(tiny_llama, tokenizer):
    handle = force_tokens(tiny_llama, [tokenizer.eos_token_id])  # every prediction is empty = abstention
    try:
        result = evaluate_squad(tiny_llama, tokenizer, SQUAD, batch_size=2, log_samples=True, progress=False)
    finally:
        handle.remove()
    metrics, counts = result["metrics"], result["counts"]
    assert counts["total"] == 3 and counts["HasAns_total"] == 2 and counts["NoAns_total"] == 1
    assert metrics["exact"] == pytest.approx(1 / 3) and metrics["f1"] == pytest.approx(1 / 3)
    assert metrics["HasAns_exact"] == 0.0 and metrics["NoAns_exact"] == 1.0 and metrics["NoAns_f1"] == 1.0
    assert metrics["no_answer_rate"] == 1.0
    assert metrics["answer_nll"] > 0 and counts["answer_tokens"] >= 3
    # exact [0, 1, 0]: mean 1/3, variance (1/9 + 4/9 + 1/9) / 2 = 1/3, se sqrt(1/3) / sqrt(3) = 1/3
    assert metrics["exact_stderr"] == pytest.approx(1 / 3) and metrics["no_answer_rate_stderr"] == 0.0
    assert metrics["HasAns_exact_stderr"] == 0.0 and metrics["NoAns_exact_stderr"] is None  # one NoAns example
    per_example = result["per_example"]
    assert per_example["exact"] == {"a": 0.0, "b": 1.0, "c": 0.0} and per_example["HasAns_f1"] == {"a": 0.0, "c": 0.0}
    tokens, nll = per_example["answer_tokens"], per_example["answer_nll"]
    assert sum(tokens.values()) == counts["answer_tokens"]
    assert sum(nll[i] * tokens[i] for i in nll) / counts["answer_tokens"] == pytest.approx(metrics["answer_nll"])
    assert metrics["answer_nll_stderr"] == pytest.approx(mean_stderr(list(nll.values()), list(tokens.values())))
    # the same NLL apart for the answerable (a, c) and unanswerable (b) gold targets, token-weighted
    assert per_example["HasAns_answer_nll"] == {"a": nll["a"], "c": nll["c"]} and per_example["NoAns_answer_nll"] == {"b": nll["b"]}
    has_tokens = tokens["a"] + tokens["c"]
    assert metrics["HasAns_answer_nll"] == pytest.approx((nll["a"] * tokens["a"] + nll["c"] * tokens["c"]) / has_tokens)
    assert metrics["NoAns_answer_nll"] == pytest.approx(nll["b"]) and metrics["NoAns_answer_nll_stderr"] is None
    assert metrics["HasAns_answer_nll_stderr"] == pytest.approx(
        mean_stderr([nll["a"], nll["c"]], [tokens["a"], tokens["c"]]))
    assert list(metrics)[:2] == ["exact", "exact_stderr"]  # each stderr right beside its metric
    assert [s["prediction"] for s in result["samples"]] == ["", "", ""]


@pytest.mark.parametrize("max_new_tokens, exact, f1", [
    (1, {"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 1.0, "b": 0.0, "c": 0.0}),  # "brown": id a's gold answer
    (2, {"a": 0.0, "b": 0.0, "c": 0.0}, {"a": 2 / 3, "b": 0.0, "c": 0.0}),  # "brown brown": precision 1/2, recall 1
])
def test_squad_forced_answer_scores_by_hand(tiny_llama, tokenizer, max_new_tokens, exact, f1):
    """A model that always says " brown": EM and F1 worked by hand against SQUAD's golds (b is unanswerable,
    c's answer is Natalia)."""
    (brown,) = tokenizer(" brown", add_special_tokens=False).input_ids
    handle = force_tokens(tiny_llama, [brown])
    try:
        result = evaluate_squad(tiny_llama, tokenizer, SQUAD, batch_size=3, max_new_tokens=max_new_tokens, progress=False)
    finally:
        handle.remove()
    metrics, per_example = result["metrics"], result["per_example"]
    assert per_example["exact"] == exact and per_example["f1"] == pytest.approx(f1)
    assert metrics["exact"] == pytest.approx(sum(exact.values()) / 3) and metrics["f1"] == pytest.approx(sum(f1.values()) / 3)
    assert metrics["HasAns_f1"] == pytest.approx((f1["a"] + f1["c"]) / 2)
    assert metrics["NoAns_exact"] == metrics["NoAns_f1"] == metrics["no_answer_rate"] == 0.0
    assert result["samples"] is None


def test_gsm8k_fewshot_prefix_uses_the_training_layout():
    prefix = fewshot_prefix(GSM8K[1:])
    assert prefix == "Question: A fox has 3 legs more than 1. How many legs?\nLet's solve this step by step:\n1+3 = 4\n#### 4\n\n"


def test_gsm8k_eos_model_scores_zero_and_counts_fewshot(tiny_llama, tokenizer):
    handle = force_tokens(tiny_llama, [tokenizer.eos_token_id])
    try:
        result = evaluate_gsm8k(tiny_llama, tokenizer, GSM8K[:1], fewshot_examples=GSM8K[1:], max_new_tokens=16, log_samples=True, progress=False)
    finally:
        handle.remove()
    assert result["metrics"]["strict_accuracy"] == 0.0 and result["metrics"]["flexible_accuracy"] == 0.0
    assert result["counts"] == {"total": 1, "strict_found": 0, "answer_total": 1, "answer_tokens": result["counts"]["answer_tokens"],
                                "num_fewshot": 1}
    assert result["samples"][0]["gold"] == "72" and result["samples"][0]["prediction"] == ""


def test_gsm8k_forced_answer_is_strictly_correct(tiny_llama, tokenizer):
    # Force the model to write "#### 4" then stop: strict and flexible both find 4 (the gold of example 2).
    target = tokenizer(" #### 4", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    step = {"i": 0}

    def hook(module, inputs, output):
        if output.dim() != 3:  # log-likelihood scoring sends [N, H] positions: force generation only
            return output
        output = output.clone()
        output[:, -1, target[min(step["i"], len(target) - 1)]] += 100.0
        step["i"] += 1
        return output

    handle = tiny_llama.get_output_embeddings().register_forward_hook(hook)
    try:
        result = evaluate_gsm8k(tiny_llama, tokenizer, GSM8K[1:], batch_size=1, max_new_tokens=16, log_samples=True, progress=False)
    finally:
        handle.remove()
    assert result["samples"][0]["prediction"].strip() == "#### 4"
    assert result["metrics"]["strict_accuracy"] == 1.0 and result["metrics"]["flexible_accuracy"] == 1.0


def test_nll_limit_scores_more_examples_than_generation(tiny_llama, tokenizer, tmp_path):
    data = write_task_data(tmp_path / "data")
    report = evaluate_tasks(tiny_llama, tokenizer, ["squad", "gsm8k"], data_dir=data, limit=1, nll_limit={"squad": 3},
                            max_new_tokens=2, progress=False)
    squad, gsm8k = report["per_example"]["squad"], report["per_example"]["gsm8k"]
    assert report["counts"]["squad"]["total"] == 1 and report["counts"]["squad"]["answer_total"] == 3
    assert list(squad["exact"]) == ["a"] and list(squad["answer_nll"]) == ["a", "b", "c"]
    assert list(gsm8k["strict_accuracy"]) == ["0"] and list(gsm8k["answer_nll"]) == ["0"]  # no nll_limit for gsm8k
    with pytest.raises(ValueError, match="--nll_limit applies to squad and gsm8k only"):
        evaluate_tasks(tiny_llama, tokenizer, ["boolq"], data_dir=data, nll_limit={"boolq": 3}, progress=False)


# ---------------------------------------------------------------- perplexity


def test_perplexity_report_by_hand():
    result = {"ppl": math.exp(2.0), "nll": 2.0, "seqlen": 8, "n_windows": 3, "n_tokens": 21, "window_nll": [1.0, 2.0, 3.0]}
    report = perplexity_report(result)
    metrics, se = report["metrics"], 1 / math.sqrt(3)  # window NLLs [1, 2, 3]: sd 1
    assert metrics["nll_stderr"] == pytest.approx(se)
    assert metrics["ppl_stderr"] == pytest.approx(math.exp(2.0) * se)
    assert metrics["ppl_ci95_low"] == pytest.approx(math.exp(2 - 1.959964 * se))
    assert metrics["ppl_ci95_high"] == pytest.approx(math.exp(2 + 1.959964 * se))
    assert report["per_example"] == {"nll": {"0": 1.0, "1": 2.0, "2": 3.0}}


def test_window_nll_is_each_windows_mean_token_nll(tiny_llama):
    ids = torch.randint(0, 400, (1, 3 * 16 + 5))
    result = perplexity(tiny_llama, ids, 16, batch_size=2, progress=False)
    assert len(result["window_nll"]) == 3
    assert sum(result["window_nll"]) / 3 == pytest.approx(result["nll"])
    with torch.no_grad():
        logits = tiny_llama(ids[:, 16:32]).logits[0]  # the second window alone
    expected = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 17:32]).item()
    assert result["window_nll"][1] == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- dispatcher helpers


def test_check_tasks_names_the_unknown_task():
    check_tasks(["wikitext2", "squad"])
    with pytest.raises(ValueError, match="unknown task.*mmlu.*choose from"):
        check_tasks(["squad", "mmlu"])


def test_task_limit():
    assert task_limit(200, "squad") == 200
    assert task_limit({"squad": 200}, "gsm8k") is None
    assert task_limit(None, "boolq") is None
    with pytest.raises(ValueError, match="--limit"):
        task_limit(0, "squad")


def test_long_prompts_keep_their_end_and_short_context_is_an_error(tokenizer):
    model = make_opt()  # learned positions: a prompt past max_position_embeddings would fail without truncation
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 40 + "Answer:"
    assert len(tokenizer(long_prompt).input_ids) > model.config.max_position_embeddings
    out = generate_greedy(model, tokenizer, [long_prompt, "A"], max_new_tokens=4, batch_size=2, progress=False)
    assert out[1] == generate_greedy(model, tokenizer, ["A"], max_new_tokens=4, progress=False)[0]
    scored = continuation_logprobs(model, tokenizer, [long_prompt], [" yes"], progress=False)
    assert scored[0]["logprob"] < 0
    with pytest.raises(ValueError, match="--max_new_tokens"):
        generate_greedy(model, tokenizer, ["A"], max_new_tokens=model.config.max_position_embeddings, progress=False)


# ---------------------------------------------------------------- CLI




@pytest.mark.parametrize("stop", [(), ("e",)])
def test_generate_greedy_equals_transformers_generate(tiny_llama, tokenizer, stop):
    """Our loop (rows leave the batch as they end) and `generate` (greedy) give the same outputs on the same batches."""
    from lib.eval.generation import reference_generate

    ours = generate_greedy(tiny_llama, tokenizer, PROMPTS, max_new_tokens=12, stop_strings=stop, batch_size=3, progress=False)
    assert ours == reference_generate(tiny_llama, tokenizer, PROMPTS, max_new_tokens=12, stop_strings=stop, batch_size=3)
    assert len(set(ours)) > 1 and any(ours)
