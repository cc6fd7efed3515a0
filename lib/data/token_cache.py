"""Tokenized WikiText-2 / C4 text, kept per process and on disk.

On disk under `lib.core.paths.cache_root() / "tokenized"`, keyed by (tokenizer, content hash of the
file: `lib.data.sources.file_origin`). Each entry stores its key and a SHA-256 of its token bytes; an
entry that is unreadable, foreign or fails the checksum is logged as damaged, re-tokenized and
rewritten. A cache that cannot be written only costs time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from lib.core.files import atomic_write
from lib.core.paths import cache_root
from lib.data.sources import Corpus

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


ENTRY_FORMAT = 2  # {"format", "key", "sha256", "value"}


def _checksum(value) -> str:
    """SHA-256 of the token ids in `value`: a tensor [T], or {document index: tensor [n_i]}."""
    digest = hashlib.sha256()
    items = sorted(value.items()) if isinstance(value, dict) else [(None, value)]
    for index, tensor in items:
        digest.update(repr(index).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _load(path: Path, key: tuple):
    """The cached value under `path` for `key`, or None (missing; damaged: logged once, then rebuilt)."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, weights_only=True)
        if not isinstance(entry, dict) or entry.get("format") != ENTRY_FORMAT or entry.get("key") != repr(key):
            problem = "written for another file or by another version"
        elif entry.get("sha256") != _checksum(entry["value"]):
            problem = "its tokens fail their checksum"
        else:
            return entry["value"]
    except Exception as err:  # truncated, garbage, or the wrong types inside
        problem = f"unreadable: {err.__class__.__name__}"
    logger.warning("token cache %s is damaged (%s); tokenizing again and rewriting it", path, problem)
    return None


def _save(path: Path, key: tuple, value) -> None:
    """Write the entry of `key` atomically (lib.core.files.atomic_write: no partial file survives a failure)."""
    entry = {"format": ENTRY_FORMAT, "key": repr(key), "sha256": _checksum(value), "value": value}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(entry, tmp))
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk or a file-size limit as RuntimeError
        logger.warning("cannot write token cache %s (%s); continuing without it", path, err)


def text_tokens(tokenizer, tok_key: str, corpus: Corpus, separator: str) -> torch.Tensor:
    """Token ids [T] (int64) of `separator.join(corpus.texts)`, tokenized once per (tokenizer, file)."""
    key = (tok_key, corpus.origin, len(corpus.texts), separator)
    if key not in TOKEN_CACHE:
        path = _cache_path("text", key)
        tokens = _load(path, key)
        if tokens is None:
            logger.info("tokenizing %s (once; cached in %s)", corpus.label, path.parent)
            tokens = tokenizer(separator.join(corpus.texts), return_tensors="pt", verbose=False)["input_ids"][0]
            _save(path, key, tokens.to(torch.int32))
        else:
            logger.info("tokens of %s from cache %s", corpus.label, path)
        TOKEN_CACHE[key] = tokens.long()
    return TOKEN_CACHE[key]


class DocumentTokens:
    """Token ids [n_i] of single documents, tokenized on first use; kept per process and on disk."""

    def __init__(self, tokenizer, tok_key: str, corpus: Corpus):
        key = (tok_key, corpus.origin, "documents")
        self.tokenizer, self.texts, self.key, self.path = tokenizer, corpus.texts, key, _cache_path("documents", key)
        if key not in TOKEN_CACHE:
            TOKEN_CACHE[key] = _load(self.path, key) or {}
        self.tokens: dict[int, torch.Tensor] = TOKEN_CACHE[key]
        self.n_saved = len(self.tokens)

    def __call__(self, index: int) -> torch.Tensor:
        if index not in self.tokens:
            ids = self.tokenizer(self.texts[index], return_tensors="pt", verbose=False)["input_ids"][0]
            self.tokens[index] = ids.to(torch.int32)
        return self.tokens[index]

    def save(self) -> None:
        if len(self.tokens) > self.n_saved:
            _save(self.path, self.key, self.tokens)
            self.n_saved = len(self.tokens)
