"""Calibration samples (Wanda's `get_loaders`) and tokenized evaluation text.

Letters: L = length of one calibration sample (== seqlen when packed), T = tokens of a whole text.

Sources are the calibration sources of the registry (lib.data.registry): text datasets follow Wanda's recipes
(`wikitext2`: random seqlen windows of the joined text; `c4`: a window of a random long document);
example datasets with a calibration text (`squad`, `gsm8k`, `boolq`) turn train examples into it. A name may
also be a mixture ("wikitext2+squad", "wikitext2:0.7,gsm8k:0.3", "mixed"); `apportion` turns its
shares into exact sample counts.

Task samples never contain padding: with packing "concat" randomly drawn examples are joined, each
followed by the tokenizer's EOS, and cut at seqlen; with "none" a sample is one example at its natural
length (<= seqlen). WikiText-2 / C4 windows are always seqlen tokens of running text.

Tokenized WikiText-2 / C4 text is kept for the process and on disk (`lib.data.token_cache`); task examples
are tokenized once per process.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from fractions import Fraction
from itertools import islice
from math import floor
from pathlib import Path

import torch

from lib.data import registry, token_cache
from lib.data.registry import DataError
from lib.data.sources import Corpus, resolve_data_dir, task_examples
from lib.data.token_cache import DocumentTokens, text_tokens, tokenizer_key

logger = logging.getLogger(__name__)

MIXED = ("wikitext2", "squad", "gsm8k")  # "mixed" = equal shares of these
PACKING = ("concat", "none")
TOKENIZE_BATCH = 256  # task examples tokenized per tokenizer call
MIXTURE_HELP = (
    "a name in {names}, or a mixture such as 'wikitext2+squad' (equal shares) "
    "or 'wikitext2:0.7,gsm8k:0.3' (shares summing to 1)"
)



# ---------------------------------------------------------------- names and mixtures


def dataset_names() -> tuple[str, ...]:
    """Every --calibration_dataset name: the calibration sources (the datasets a mixture combines), then "mixed"."""
    return registry.calibration_sources() + ("mixed",)


def _unknown(name: str, part: str | None = None) -> ValueError:
    what = f"{part!r} in {name!r}" if part is not None and part != name else repr(name)
    return ValueError(
        f"unknown calibration dataset {what}; use " + MIXTURE_HELP.format(names=", ".join(dataset_names()))
    )


def parse_mixture(name: str) -> list[tuple[str, Fraction]]:
    """Split a calibration dataset name into (source, share) pairs whose shares sum to 1.

    "gsm8k" -> [("gsm8k", 1)]; "mixed" -> wikitext2, squad, gsm8k at 1/3 each;
    "wikitext2+squad" -> equal shares; "wikitext2:0.7,gsm8k:0.3" -> the given shares.
    """
    if not isinstance(name, str):
        raise _unknown(str(name))
    name = name.strip()
    if name in registry.calibration_sources():
        return [(name, Fraction(1))]
    if name == "mixed":
        return [(source, Fraction(1, len(MIXED))) for source in MIXED]
    if "+" in name and ":" not in name and "," not in name:
        sources = [part.strip() for part in name.split("+")]
        weights = [Fraction(1, len(sources))] * len(sources)
    elif ":" in name and "+" not in name:
        sources, weights = [], []
        for part in name.split(","):
            source, _, weight = part.partition(":")
            try:
                share = Fraction(weight.strip())
            except (ValueError, ZeroDivisionError):
                raise ValueError(
                    f"share {weight.strip()!r} of {source.strip()!r} in {name!r} is not a number; "
                    f"write shares like 'wikitext2:0.7,gsm8k:0.3'"
                ) from None
            if share <= 0:
                raise ValueError(
                    f"share {weight.strip()} of {source.strip()!r} in {name!r} must be > 0; drop the source instead"
                )
            sources.append(source.strip())
            weights.append(share)
        total = sum(weights)
        if abs(total - 1) > Fraction(1, 10**6):
            raise ValueError(
                f"shares in {name!r} sum to {float(total):g}; they must sum to 1, e.g. 'wikitext2:0.7,gsm8k:0.3'"
            )
    else:
        raise _unknown(name)
    for source in sources:
        if source not in registry.calibration_sources():
            raise _unknown(name, source)
    if len(set(sources)) != len(sources):
        raise ValueError(f"calibration mixture {name!r} names a source twice; list each source once")
    return list(zip(sources, weights))


def apportion(weights: Sequence[float | Fraction], total: int) -> list[int]:
    """Integer counts proportional to `weights` that sum exactly to `total` (largest remainder).

    Each source gets floor(total * share); the samples left over go to the largest remainders, ties to
    the earlier source. E.g. ([1, 1, 1], 128) -> [43, 43, 42]; ([0.7, 0.3], 10) -> [7, 3].
    Floats are read by their decimal repr (0.7 is exactly 7/10).
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    shares = [Fraction(repr(w)) if isinstance(w, float) else Fraction(w) for w in weights]
    if not shares or any(share <= 0 for share in shares):
        raise ValueError(f"weights must be a non-empty list of positive numbers, got {list(weights)}")
    quotas = [total * share / sum(shares) for share in shares]
    counts = [floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


class _ExampleStream:
    """Token ids of task examples in a seeded random order; each pass over the examples is a new permutation."""

    def __init__(self, texts: Callable[[int], str], n_examples: int, tokenizer, cache: dict, seed: int):
        self.texts, self.n_examples, self.tokenizer, self.cache = texts, n_examples, tokenizer, cache
        self.rng = random.Random(seed)
        self.queue: deque[int] = deque()
        self.drawn = 0  # examples handed out so far; above n_examples some repeat

    def next(self) -> list[int]:
        self.drawn += 1
        if not self.queue:
            order = list(range(self.n_examples))
            self.rng.shuffle(order)
            self.queue.extend(order)
        if self.queue[0] not in self.cache:
            batch = [i for i in islice(self.queue, TOKENIZE_BATCH) if i not in self.cache]
            encoded = self.tokenizer([self.texts(i) for i in batch], add_special_tokens=False, verbose=False)
            self.cache.update(zip(batch, encoded["input_ids"]))
        return self.cache[self.queue.popleft()]


# ---------------------------------------------------------------- samples per source


def _wikitext2_samples(n: int, seed: int, seqlen: int, tokens: torch.Tensor, label: str) -> list[torch.Tensor]:
    """Wanda: n random windows [1, seqlen] of the train text (tokens [T])."""
    if tokens.numel() <= seqlen:
        raise ValueError(f"{label} has {tokens.numel()} tokens, too few for --seqlen {seqlen}; use a smaller --seqlen")
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        start = rng.randint(0, tokens.numel() - seqlen - 1)
        samples.append(tokens[start : start + seqlen].unsqueeze(0))  # (1, seqlen)
    _warn_repeated_samples(samples, label)
    return samples


def _warn_repeated_samples(samples: list[torch.Tensor], label: str) -> None:
    """One warning when some of the calibration samples [1, L] are identical (a text barely longer than seqlen)."""
    distinct = len({tuple(sample[0].tolist()) for sample in samples})
    if distinct < len(samples):
        logger.warning("calibration: only %d distinct of %d samples from %s (the text is short for this --seqlen); "
                       "repeated samples weigh twice", distinct, len(samples), label)


def _c4_samples(n: int, seed: int, seqlen: int, corpus: Corpus, documents: DocumentTokens) -> list[torch.Tensor]:
    """Wanda: a random document longer than seqlen tokens, then a random window [1, seqlen] of it."""
    n_documents = len(corpus.texts)
    if n_documents == 0:
        raise DataError(f"{corpus.label} holds no documents")
    rng = random.Random(seed)
    samples, checked = [], False
    for _ in range(n):
        misses = 0
        while True:
            ids = documents(rng.randint(0, n_documents - 1))
            if ids.numel() > seqlen:
                break
            misses += 1
            if misses >= n_documents and not checked:  # make sure some document is long enough
                longest = max(documents(i).numel() for i in range(n_documents))
                if longest <= seqlen:
                    documents.save()
                    raise ValueError(
                        f"no document of {corpus.label} is longer than --seqlen {seqlen} tokens "
                        f"(longest: {longest}); use a smaller --seqlen or more C4 data"
                    )
                checked = True
        start = rng.randint(0, ids.numel() - seqlen - 1)
        samples.append(ids[start : start + seqlen].long().unsqueeze(0))  # (1, seqlen)
    documents.save()
    _warn_repeated_samples(samples, corpus.label)
    return samples


def _task_samples(
    task: str, n: int, seed: int, seqlen: int, tokenizer, tok_key: str, data_dir: Path | None, packing: str
) -> list[torch.Tensor]:
    """Task prompts as samples [1, L]: packed to L == seqlen with EOS separators, or one example each."""
    eos = tokenizer.eos_token_id
    if packing == "concat" and eos is None:
        raise ValueError(
            f"packing 'concat' separates {task} examples with the tokenizer's EOS token, and this tokenizer has "
            f"none; set tokenizer.eos_token or use --calibration_packing none"
        )
    examples, origin = task_examples(task, "train", data_dir)
    if not examples:
        raise DataError(f"the {task} train split ({origin}) holds no examples")
    if packing == "none" and n > len(examples):  # repeating examples would weight some of them twice, silently
        raise DataError(f"--calibration_packing none takes one {task} example per sample, and {n} samples need "
                        f"{n} examples but the {task} train split has {len(examples)}: lower --nsamples to at "
                        f"most {len(examples)} or use --calibration_packing concat")
    cache = token_cache.TOKEN_CACHE.setdefault((tok_key, origin, task), {})
    text = registry.get(task).calibration_text
    stream = _ExampleStream(lambda i: text(examples[i]), len(examples), tokenizer, cache, seed)
    samples = []
    for _ in range(n):
        if packing == "none":
            ids = stream.next()[:seqlen]
        else:
            ids = []
            while len(ids) < seqlen:
                ids.extend(stream.next())
                ids.append(eos)
            ids = ids[:seqlen]
        samples.append(torch.tensor([ids], dtype=torch.long))  # (1, L)
    if stream.drawn > len(examples):
        logger.warning("calibration: %d %s samples use %d examples, but the train split has only %d distinct "
                       "example(s), so examples repeat; use more data or a smaller --nsamples / --seqlen",
                       n, task, stream.drawn, len(examples))
    return samples


def calibration_samples(
    source: str, n: int, seed: int, seqlen: int, tokenizer, data_dir=None, packing: str = "concat"
) -> list[torch.Tensor]:
    """n calibration samples [1, L] of one registered dataset, drawn as its spec says (see the module docstring)."""
    spec = registry.get(source)
    data_dir = resolve_data_dir(data_dir)
    tok_key = tokenizer_key(tokenizer)
    if spec.kind == "examples":
        samples = _task_samples(source, n, seed, seqlen, tokenizer, tok_key, data_dir, packing)
    elif spec.sampling == "windows":
        corpus = spec.corpus("calibration", data_dir)
        samples = _wikitext2_samples(n, seed, seqlen, text_tokens(tokenizer, tok_key, corpus, " "), corpus.label)
    else:
        corpus = spec.corpus("calibration", data_dir)
        samples = _c4_samples(n, seed, seqlen, corpus, DocumentTokens(tokenizer, tok_key, corpus))
    logger.info(
        "calibration: %d samples from %s (seqlen %d, seed %d%s)", n, source, seqlen, seed,
        f", packing {packing}" if spec.kind == "examples" else "",
    )
    return samples


# ---------------------------------------------------------------- public API


def _check_positive(flag: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"--{flag} must be a positive integer, got {value!r}")


def _target(inp: torch.Tensor) -> torch.Tensor:
    tar = inp.clone()
    tar[:, :-1] = -100
    return tar


def _eval_tokens(name: str, tokenizer, tok_key: str, data_dir: Path | None, seqlen: int) -> torch.Tensor:
    spec = registry.get(name, "text")
    tokens = text_tokens(tokenizer, tok_key, spec.corpus("evaluation", data_dir), spec.eval_separator)
    return (tokens if spec.eval_windows is None else tokens[: spec.eval_windows * seqlen]).unsqueeze(0)


def evaluation_dataset(name: str) -> str:
    """The perplexity dataset that goes with calibration `name`: c4 for C4 alone, else wikitext2 (Wanda)."""
    return "c4" if [source for source, _ in parse_mixture(name)] == ["c4"] else "wikitext2"


def check_sources(name: str, data_dir=None, evaluation: bool = True) -> str | None:
    """Read and validate every file calibration `name` needs, and (with `evaluation`) its perplexity text.

    Meant before the model loads: a missing --data_dir or file, invalid JSON, a field of the wrong
    type, text that is not UTF-8 or a file without examples is a DataError naming the file. Parsed
    task files are kept for the process, so the later calibration reads them for free.
    Returns the evaluation text's label (e.g. "wikitext2/wiki.test.raw"), or None without `evaluation`.
    """
    data_dir = resolve_data_dir(data_dir)
    for source, _ in parse_mixture(name):
        spec = registry.get(source)
        if spec.kind == "examples":
            task_examples(source, "train", data_dir)
        else:
            spec.corpus("calibration", data_dir)
    if not evaluation:
        return None
    label = registry.get(evaluation_dataset(name)).corpus("evaluation", data_dir).label
    return label if data_dir is None else f"{label} under {data_dir}"


def get_eval_tokens(name: str, tokenizer, data_dir=None, seqlen: int = 2048) -> torch.Tensor:
    """The tokenized perplexity text of a registered text dataset, LongTensor [1, T].

    wikitext2: the test split joined with "\\n\\n". c4: the first 1100 validation documents joined
    with " " and cut to 256 * seqlen tokens (Wanda); a local copy without a validation file uses the
    held-out end of the train sample instead (with a warning).
    """
    if name not in registry.names("text"):
        raise ValueError(f"perplexity dataset {name!r} is not one of {', '.join(registry.names('text'))}")
    _check_positive("seqlen", seqlen)
    return _eval_tokens(name, tokenizer, tokenizer_key(tokenizer), resolve_data_dir(data_dir), seqlen)


def get_loaders(
    name: str,
    nsamples: int = 128,
    seed: int = 0,
    seqlen: int = 2048,
    tokenizer=None,
    data_dir=None,
    packing: str = "concat",
):
    """Calibration samples and evaluation tokens (Wanda's contract).

    Args:
        name: a name in dataset_names() or a mixture ("wikitext2+squad", "wikitext2:0.7,gsm8k:0.3").
        nsamples: number of calibration samples; a mixture splits it by largest remainder.
        seed: seeds every random draw (local generators; global RNG state is neither used nor changed).
        seqlen: sample length.
        tokenizer: the model's tokenizer (required).
        data_dir: local data directory (else env WANDA_DATA_DIR, else the Hugging Face Hub).
        packing: "concat" (task examples packed with EOS separators, L == seqlen) or "none" (one task
            example per sample, L <= seqlen). WikiText-2 / C4 samples are always seqlen windows.
    Returns:
        (trainloader, testenc): trainloader is a list of nsamples pairs (inp, tar), inp a LongTensor
        [1, L] and tar its copy with every position but the last set to -100; testenc.input_ids is
        [1, T], the C4 evaluation text for "c4" and the WikiText-2 test text otherwise.
    """
    mixture = parse_mixture(name)
    _check_positive("nsamples", nsamples)
    _check_positive("seqlen", seqlen)
    if packing not in PACKING:
        raise ValueError(f"--calibration_packing {packing!r} is not one of {', '.join(PACKING)}")
    if tokenizer is None:
        raise ValueError("get_loaders needs the model's tokenizer; pass tokenizer=lib.models.loading.load_tokenizer(model)")
    from transformers import BatchEncoding

    data_dir = resolve_data_dir(data_dir)
    tok_key = tokenizer_key(tokenizer)
    counts = apportion([share for _, share in mixture], nsamples)
    inputs: list[torch.Tensor] = []
    for (source, _), count in zip(mixture, counts):
        if count:
            inputs += calibration_samples(source, count, seed, seqlen, tokenizer, data_dir, packing)
    if len(mixture) > 1:
        logger.info(
            "calibration mixture %s: %s (nsamples %d, seed %d)",
            name, ", ".join(f"{source} {count}" for (source, _), count in zip(mixture, counts)), nsamples, seed,
        )
        random.Random(seed).shuffle(inputs)
    trainloader = [(inp, _target(inp)) for inp in inputs]
    testenc = BatchEncoding({"input_ids": _eval_tokens(evaluation_dataset(name), tokenizer, tok_key, data_dir, seqlen)})
    return trainloader, testenc
