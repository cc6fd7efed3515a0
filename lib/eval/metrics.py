"""Task metrics as pure functions on strings: SQuAD v2 EM/F1 and GSM8K answer extraction.

SQuAD follows the official v2.0 evaluation script: answers are normalized (lower
case, punctuation removed, the articles a/an/the removed, whitespace collapsed),
exact match and token F1 are the maximum over the gold answers, and an
unanswerable question has the single gold answer "" (so only an empty prediction
scores). Our fine-tuned models say `NO_ANSWER` instead of nothing, so that string
counts as an empty prediction. All metrics are fractions in [0, 1].
"""

from __future__ import annotations

import re
import string
from collections import Counter
from decimal import Decimal, InvalidOperation

from lib.data.prompts import NO_ANSWER

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
# A number as written in GSM8K text: optional sign and "$", thousands groups or plain digits, optional decimals.
_NUMBER = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_STRICT_RE = re.compile(r"####\s*(" + _NUMBER + ")")


# ---------------------------------------------------------------- SQuAD v2


def normalize_answer(text: str) -> str:
    """Official SQuAD normalization: lower, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def is_no_answer(prediction: str) -> bool:
    """True for an abstention: an empty prediction or the NO_ANSWER string (after normalization)."""
    return normalize_answer(prediction) in ("", normalize_answer(NO_ANSWER))


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall over the multiset of normalized tokens.

    When either side has no tokens (an abstention or the "" gold of an unanswerable
    question), F1 is 1.0 if both are empty and 0.0 otherwise, as in the official script.
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    n_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if n_same == 0:
        return 0.0
    precision = n_same / len(pred_tokens)
    recall = n_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, answers: list[str]) -> dict[str, float]:
    """Exact match and F1 of one prediction, each the maximum over the gold `answers`.

    `answers == []` marks an unanswerable question: it is correct (EM = F1 = 1) iff the
    prediction is empty or NO_ANSWER. A NO_ANSWER prediction on an answerable question scores 0.
    """
    if is_no_answer(prediction):
        prediction = ""
    golds = answers or [""]
    return {
        "exact": max(exact_match(prediction, gold) for gold in golds),
        "f1": max(token_f1(prediction, gold) for gold in golds),
    }


def squad_summary(scores: list[dict[str, float]], has_answer: list[bool]) -> tuple[dict, dict]:
    """Aggregate per-example `squad_scores` into overall / HasAns / NoAns means.

    Returns:
        (metrics, counts): metrics {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact",
        "NoAns_f1"} (a subset's entries are None when it has no examples); counts {"total",
        "HasAns_total", "NoAns_total"}.
    """
    if len(scores) != len(has_answer):
        raise ValueError(f"{len(scores)} scores but {len(has_answer)} has_answer flags")
    groups = {
        "": scores,
        "HasAns_": [s for s, h in zip(scores, has_answer) if h],
        "NoAns_": [s for s, h in zip(scores, has_answer) if not h],
    }
    metrics, counts = {}, {}
    for prefix, group in groups.items():
        for key in ("exact", "f1"):
            metrics[prefix + key] = sum(s[key] for s in group) / len(group) if group else None
        counts[prefix + "total"] = len(group)
    return metrics, counts


# ---------------------------------------------------------------- GSM8K


def normalize_number(text: str) -> str | None:
    """Canonical form of a written number: no "$", thousands commas or trailing zeros.

    "1,234" -> "1234", "$5.00" -> "5", "18.0" -> "18", "-3.50" -> "-3.5", "x" -> None.
    """
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_strict(text: str) -> str | None:
    """The normalized number after the first "####" (the GSM8K answer marker), or None."""
    match = _STRICT_RE.search(text)
    return normalize_number(match.group(1)) if match else None


def extract_flexible(text: str) -> str | None:
    """The normalized last number anywhere in `text`, or None when there is none."""
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def gsm8k_gold(solution: str) -> str:
    """The normalized final answer of a reference solution ("... #### 72")."""
    gold = extract_strict(solution)
    if gold is None:
        raise ValueError(f"GSM8K reference solution has no '#### <number>' answer: {solution[-80:]!r}")
    return gold


def gsm8k_scores(prediction: str, gold: str) -> dict:
    """Strict and flexible correctness of one generated solution against a normalized gold number."""
    strict = extract_strict(prediction)
    flexible = extract_flexible(prediction)
    return {
        "strict": float(strict == gold),
        "flexible": float(flexible == gold),
        "extracted_strict": strict,
        "extracted_flexible": flexible,
    }
