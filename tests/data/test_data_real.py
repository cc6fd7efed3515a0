"""Opt-in: every calibration dataset and mixture from ../shared/data with the default model's tokenizer."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.helpers import SHARED_DATA
import lib.data.token_cache
from lib.data import get_eval_tokens, get_loaders, load_task_examples

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} does not exist"),
]

NSAMPLES, SEQLEN = 8, 256
NAMES = [
    "wikitext2", "c4", "squad", "gsm8k", "boolq", "mixed",
    "wikitext2+squad", "wikitext2+gsm8k", "wikitext2:0.7,gsm8k:0.3", "c4+boolq",
]
# counts of ../shared/data (its README); BoolQ has no train split there and falls back to dev
EXAMPLES = {("squad", "train"): 2828, ("squad", "eval"): 3250, ("gsm8k", "train"): 7473,
            ("gsm8k", "eval"): 1319, ("boolq", "train"): 3270, ("boolq", "eval"): 3270}


@pytest.fixture(scope="module")
def tokenizer():
    from lib.core.errors import ModelLoadError
    from lib.models.loading import load_tokenizer

    try:
        return load_tokenizer("smollm2-135m")
    except ModelLoadError as err:
        pytest.skip(f"default model unavailable: {err}")


@pytest.fixture(scope="module", autouse=True)
def token_cache(tokenizer, tmp_path_factory):
    """Tokenized corpora go to a temporary cache, after the tokenizer was loaded from the real one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDA_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setattr(lib.data.token_cache, "TOKEN_CACHE", {})
        yield


@pytest.mark.parametrize("name", NAMES)
def test_every_dataset_and_mixture_loads(tokenizer, name):
    trainloader, testenc = get_loaders(name, nsamples=NSAMPLES, seed=0, seqlen=SEQLEN, tokenizer=tokenizer, data_dir=SHARED_DATA)
    assert len(trainloader) == NSAMPLES
    for inp, tar in trainloader:
        assert inp.dtype == torch.long and inp.shape == (1, SEQLEN)
        assert 0 <= int(inp.min()) and int(inp.max()) < len(tokenizer)
        assert (tar[0, :-1] == -100).all() and tar[0, -1] == inp[0, -1]
    n_tokens = testenc.input_ids.shape[1]
    assert testenc.input_ids.shape[0] == 1 and n_tokens >= 16 * SEQLEN
    if name == "c4":
        assert n_tokens == 256 * SEQLEN  # Wanda's cut of the held-out documents


def test_packing_none_natural_lengths(tokenizer):
    trainloader, _ = get_loaders("gsm8k", nsamples=NSAMPLES, seqlen=SEQLEN, tokenizer=tokenizer, data_dir=SHARED_DATA, packing="none")
    lengths = [inp.shape[1] for inp, _ in trainloader]
    assert all(0 < n <= SEQLEN for n in lengths) and len(set(lengths)) > 1


def test_mixed_counts_logged(tokenizer, caplog):
    with caplog.at_level(logging.INFO, logger="lib.data"):
        get_loaders("mixed", nsamples=NSAMPLES, seqlen=SEQLEN, tokenizer=tokenizer, data_dir=SHARED_DATA)
    assert "calibration mixture mixed: wikitext2 3, squad 3, gsm8k 2" in caplog.text


@pytest.mark.parametrize("task, split", sorted(EXAMPLES))
def test_task_example_counts(task, split):
    examples = load_task_examples(task, split, SHARED_DATA)
    assert len(examples) == EXAMPLES[task, split]
    assert len(load_task_examples(task, split, SHARED_DATA, limit=5)) == 5


def test_eval_tokens(tokenizer):
    wikitext = get_eval_tokens("wikitext2", tokenizer, SHARED_DATA, seqlen=SEQLEN)
    c4 = get_eval_tokens("c4", tokenizer, SHARED_DATA, seqlen=SEQLEN)
    assert wikitext.shape[0] == 1 and wikitext.shape[1] > 200_000
    assert c4.shape == (1, 256 * SEQLEN)
