"""The toolkit's directories and the environment variables that set them.

WANDA_CACHE: converted models and tokenized corpora (default ~/.cache/wanda_hybrid; empty means unset).
WANDA_DATA_DIR: the local data directory when no --data_dir is given (unset or empty: the Hugging Face Hub).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "WANDA_CACHE"
DATA_DIR_ENV = "WANDA_DATA_DIR"


def cache_root() -> Path:
    """Directory for converted models and tokenized corpora (env WANDA_CACHE overrides; empty means unset)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "wanda_hybrid")


def chosen_data_dir(data_dir: str | os.PathLike | None) -> str | os.PathLike | None:
    """The data directory a run reads: `data_dir`, else env WANDA_DATA_DIR, else None (= the Hub); not checked."""
    return data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
