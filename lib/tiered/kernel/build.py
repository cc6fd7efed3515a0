"""Compiling the hybrid kernel (csrc/hybrid_kernel.cpp) once, and the exact fallback when that cannot be done.

`extension()` builds the C++ ops with `torch.utils.cpp_extension.load` (ninja, -O3, and -mavx2 -mfma /
-mavx512f where this CPU has them) into a build directory keyed by the source's hash and the flags, so a
stale build is never reused, under torch's extensions directory (env TORCH_EXTENSIONS_DIR, else
~/.cache/torch_extensions; shared by every run, whatever its WANDA_CACHE). The
first call in a process compiles or loads it; later calls return the same module. When no compiler or
ninja is present (or env HYBRID_KERNEL=reference forces it) it returns None and logs ONE warning: the
exact reference `lib.tiered.matmul` is used instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "hybrid_kernel.cpp"
FORCE_ENV = "HYBRID_KERNEL"  # "reference": never build, use lib.tiered.matmul (for tests and comparisons)
_warned: list[bool] = []
_failed: list[bool] = []  # a failed build is not retried in this process


def cpu_flags() -> list[str]:
    """The vector flags this CPU supports (from /proc/cpuinfo; none where it cannot be read)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    words = set(info.split())
    flags = []
    if {"avx2", "fma"} <= words:
        flags += ["-mavx2", "-mfma", "-mf16c"]
    if "avx512f" in words:
        flags += ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mprefer-vector-width=512"]
    return flags


def compile_flags() -> list[str]:
    return ["-O3", "-std=c++17", "-fopenmp", *cpu_flags()]


def build_dir(flags: list[str]) -> Path:
    """<torch extensions dir>/wanda_hybrid-<hash of the source, the flags and torch's version>."""
    import torch

    key = hashlib.sha1(SOURCE.read_bytes() + " ".join(flags).encode() + torch.__version__.encode()).hexdigest()[:16]
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / f"wanda_hybrid-{key}"


def forced_reference() -> bool:
    return os.environ.get(FORCE_ENV, "").strip().lower() == "reference"


def _warn_once(reason: str) -> None:
    if not _warned:
        _warned.append(True)
        logger.warning("hybrid kernel unavailable (%s); using the exact reference lib.tiered.matmul instead (slow)", reason)


@lru_cache(maxsize=1)
def _load():
    flags = compile_flags()
    directory = build_dir(flags)
    directory.mkdir(parents=True, exist_ok=True)  # torch's load() locks it while one process compiles
    from torch.utils.cpp_extension import load

    logger.info("loading the hybrid kernel (compiled once into %s)", directory)
    return load(name="hybrid_kernel", sources=[str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                build_directory=str(directory), verbose=False)


def extension():
    """The compiled kernel module (ops tiered_linear, csr_linear), or None (one warning per process) when it cannot
    be built or FORCE_ENV=reference."""
    if forced_reference():
        _warn_once(f"{FORCE_ENV}=reference")
        return None
    if _failed:
        return None
    try:
        return _load()
    except Exception as err:  # no compiler, no ninja, a failed compile: all mean the reference path  # noqa: BLE001
        _failed.append(True)
        _warn_once(f"{err.__class__.__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else 'build failed'}")
        return None


def kernel_ops():
    """The compiled module, once `extension()` has returned it in this process (a module holds no reference to it,
    so models stay copyable and picklable)."""
    return _load()
