"""Hand-worked cases for SQuAD v2 and GSM8K metrics; each chosen so a plausible bug fails."""

from __future__ import annotations

import pytest

from lib.data.prompts import NO_ANSWER
from lib.eval.metrics import (exact_match, extract_flexible, extract_strict, gsm8k_gold, gsm8k_scores, normalize_answer,
                              normalize_number, squad_scores, squad_summary, token_f1)


# ---------------------------------------------------------------- SQuAD normalization


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower", "eiffel tower"),  # case and a leading article
        ("an apple and the theory", "apple and theory"),  # articles only as whole words ("theory" stays)
        ("Eiffel-Tower!", "eiffeltower"),  # punctuation is deleted, not replaced by a space
        ("  a\tb \n c  ", "b c"),  # "a" is an article; tabs/newlines/runs collapse
        ("A", ""),
        ("U.S.A.", "usa"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_ignores_case_punctuation_articles():
    assert exact_match("the Denver Broncos.", "Denver  Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0


def test_f1_worked_by_hand():
    # pred "the big red dog" -> [big, red, dog]; gold "a red dog barked" -> [red, dog, barked]
    # common {red, dog} = 2; precision 2/3, recall 2/3, F1 = 2/3.
    # (Without article removal: 4 vs 4 tokens, common 2, F1 = 1/2.)
    assert token_f1("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    # pred [red, dog] vs gold [big, red, dog, barked, loudly]: P = 1, R = 2/5, F1 = 2*0.4/1.4 = 4/7.
    assert token_f1("the red dog", "a big red dog barked loudly") == pytest.approx(4 / 7)
    # Multiset overlap: pred [dog, dog] vs gold [dog] shares one token: P = 1/2, R = 1, F1 = 2/3.
    assert token_f1("dog dog", "dog") == pytest.approx(2 / 3)
    assert token_f1("cat", "dog") == 0.0


def test_several_gold_answers_take_the_maximum_of_each_metric():
    scores = squad_scores("Denver Broncos", ["Broncos", "the Denver Broncos", "Denver Broncos team"])
    assert scores == {"exact": 1.0, "f1": 1.0}
    # pred [big, red, dog]: vs "dog" F1 = 2*(1/3)*1/(4/3) = 0.5; vs "red dog" F1 = 2*(2/3)*1/(5/3) = 0.8.
    scores = squad_scores("big red dog", ["dog", "red dog"])
    assert scores["exact"] == 0.0
    assert scores["f1"] == pytest.approx(0.8)


@pytest.mark.parametrize("prediction", ["", "  ", NO_ANSWER, "Unanswerable.", "the"])
def test_abstention_is_correct_only_on_unanswerable(prediction):
    assert squad_scores(prediction, []) == {"exact": 1.0, "f1": 1.0}
    assert squad_scores(prediction, ["Paris"]) == {"exact": 0.0, "f1": 0.0}


def test_answering_an_unanswerable_question_scores_zero():
    assert squad_scores("Paris", []) == {"exact": 0.0, "f1": 0.0}
    assert squad_scores("unanswerable question", []) == {"exact": 0.0, "f1": 0.0}


def test_squad_summary_splits_has_and_no_answer():
    scores = [{"exact": 1.0, "f1": 1.0}, {"exact": 0.0, "f1": 0.0}, {"exact": 0.0, "f1": 0.5}]
    metrics, counts = squad_summary(scores, [True, False, True])
    assert counts == {"total": 3, "HasAns_total": 2, "NoAns_total": 1}
    assert metrics["exact"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(1.5 / 3)
    assert metrics["HasAns_exact"] == pytest.approx(0.5)
    assert metrics["HasAns_f1"] == pytest.approx(0.75)
    assert metrics["NoAns_exact"] == 0.0 and metrics["NoAns_f1"] == 0.0
    metrics, counts = squad_summary(scores[:1], [True])
    assert metrics["NoAns_exact"] is None and counts["NoAns_total"] == 0


# ---------------------------------------------------------------- GSM8K


@pytest.mark.parametrize(
    "text, expected",
    [("1,234", "1234"), ("$5.00", "5"), ("18.0", "18"), ("-3.50", "-3.5"), ("0.25", "0.25"), ("-0.0", "0"),
     ("1,234,567", "1234567"), ("7.", "7"), ("abc", None)],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("48 / 2 = 24 clips\n#### 1,234", "1234"),  # thousands comma
        ("#### -7", "-7"),  # negative
        ("####3.50", "3.5"),  # decimal, no space
        ("It costs $5.\n#### $5.00", "5"),  # dollar sign and trailing zeros
        ("#### 72\nQuestion: next", "72"),
        ("#### 5 and later #### 6", "5"),  # the first marker
        ("The answer is 18.", None),  # no "####"
    ],
)
def test_extract_strict(text, expected):
    assert extract_strict(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She has 3 apples and buys 12 more, so 15 in total.", "15"),  # last of several numbers; sentence period
        ("It costs $1,250.00 in all", "1250"),
        ("The temperature fell to -4 degrees", "-4"),
        ("Each costs 2.5 dollars, 10 cost 25.0", "25"),
        ("Scores were 3,4 and 5,6", "6"),  # "3,4" is a list, not a thousands group
        ("#### 42", "42"),
        ("no numbers here", None),
    ],
)
def test_extract_flexible(text, expected):
    assert extract_flexible(text) == expected


def test_gsm8k_scores_strict_and_flexible_differ():
    gold = gsm8k_gold("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72")
    assert gold == "72"
    assert gsm8k_scores("48 + 24 = 72\n#### 72", gold) == {
        "strict": 1.0, "flexible": 1.0, "extracted_strict": "72", "extracted_flexible": "72"}
    only_flexible = gsm8k_scores("She sold 48 + 24 = 72 clips.", gold)
    assert (only_flexible["strict"], only_flexible["flexible"]) == (0.0, 1.0)
    # flexible takes the LAST number: a trailing number that is not the answer makes it wrong.
    assert gsm8k_scores("#### 72 then 5 more", gold) == {
        "strict": 1.0, "flexible": 0.0, "extracted_strict": "72", "extracted_flexible": "5"}


def test_gsm8k_gold_requires_marker():
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("The answer is 5")
