"""The error classes raised in one layer and caught or subclassed in another; each message is one line
that says what to do."""

from __future__ import annotations


class OutputError(ValueError):
    """An output path that must not or cannot be written; the message says what to do."""


class ModelLoadError(ValueError):
    """A model name, path or setting that cannot be loaded; the message says what to do."""


class WeightFileError(ModelLoadError):
    """A weight or tier-map file that is not what it claims to be; the message names the file and the defect."""
