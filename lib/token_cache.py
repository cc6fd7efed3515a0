"""Tokenized WikiText-2 / C4 text, kept per process and on disk.

On disk under `lib.models.cache_root() / "tokenized"`, keyed by (tokenizer, file); a truncated or
foreign cache file is ignored and rewritten; a cache that cannot be written only costs time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from lib.data_sources import Corpus
from lib.models import cache_root

logger = logging.getLogger(__name__)

# (tokenizer key, source origin, recipe) -> tokens; one tokenization per source and process
TOKEN_CACHE: dict[tuple, object] = {}


def tokenizer_key(tokenizer) -> str:
    """A short hash identifying a tokenizer's behaviour (name, vocabulary, merges, special-token rules)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    flags = [getattr(tokenizer, attr, None) for attr in ("add_bos_token", "add_eos_token")]
    return hashlib.sha1(f"{tokenizer.name_or_path}|{flags}|{spec}".encode()).hexdigest()[:16]


def _cache_path(kind: str, key: tuple) -> Path:
    return cache_root() / "tokenized" / f"{kind}-{hashlib.sha1(repr(key).encode()).hexdigest()[:20]}.pt"


def _load(path: Path):
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # a truncated or foreign file: recompute and overwrite it
        logger.warning("ignoring unreadable token cache %s (%s)", path, err.__class__.__name__)
        return None


def _save(path: Path, value) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(value, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk or a file-size limit as RuntimeError
        tmp.unlink(missing_ok=True)
        logger.warning("cannot write token cache %s (%s); continuing without it", path, err)


def text_tokens(tokenizer, tok_key: str, corpus: Corpus, separator: str) -> torch.Tensor:
    """Token ids [T] (int64) of `separator.join(corpus.texts)`, tokenized once per (tokenizer, file)."""
    key = (tok_key, corpus.origin, len(corpus.texts), separator)
    if key not in TOKEN_CACHE:
        path = _cache_path("text", key)
        tokens = _load(path)
        if tokens is None:
            logger.info("tokenizing %s (once; cached in %s)", corpus.label, path.parent)
            tokens = tokenizer(separator.join(corpus.texts), return_tensors="pt", verbose=False)["input_ids"][0]
            _save(path, tokens.to(torch.int32))
        else:
            logger.info("tokens of %s from cache %s", corpus.label, path)
        TOKEN_CACHE[key] = tokens.long()
    return TOKEN_CACHE[key]


class DocumentTokens:
    """Token ids [n_i] of single documents, tokenized on first use; kept per process and on disk."""

    def __init__(self, tokenizer, tok_key: str, corpus: Corpus):
        key = (tok_key, corpus.origin, "documents")
        self.tokenizer, self.texts, self.path = tokenizer, corpus.texts, _cache_path("documents", key)
        if key not in TOKEN_CACHE:
            TOKEN_CACHE[key] = _load(self.path) or {}
        self.tokens: dict[int, torch.Tensor] = TOKEN_CACHE[key]
        self.n_saved = len(self.tokens)

    def __call__(self, index: int) -> torch.Tensor:
        if index not in self.tokens:
            ids = self.tokenizer(self.texts[index], return_tensors="pt", verbose=False)["input_ids"][0]
            self.tokens[index] = ids.to(torch.int32)
        return self.tokens[index]

    def save(self) -> None:
        if len(self.tokens) > self.n_saved:
            _save(self.path, self.tokens)
            self.n_saved = len(self.tokens)
