"""Layer `data`: where calibration, fine-tuning and evaluation text comes from.

registry (DatasetSpec: one per dataset, data only), builtin (the built-in datasets, registered when
this package is imported), sources (local files and the Hub), calibration (Wanda's `get_loaders`:
sampling, mixtures, packing; tokenized evaluation text), token_cache, prompts. Imports only `lib.core`.

`lib.data.get_loaders` is Wanda's contract, and the names below are what `lib.data` exported before
it became a package; they are imported on first use, so `import lib.data.registry` needs no torch.
"""

from lib.data import builtin  # noqa: F401  (registers the built-in datasets)

_CALIBRATION = ("MIXED", "PACKING", "apportion", "calibration_samples", "check_sources", "dataset_names",
                "evaluation_dataset", "get_eval_tokens", "get_loaders", "parse_mixture")
_SOURCES = ("load_task_examples", "resolve_data_dir")
__all__ = [*_CALIBRATION, *_SOURCES, "DataError", "tokenizer_key"]


def __getattr__(name: str):
    """The public names of `lib.data` (`__all__`), from the module that defines them."""
    if name in _CALIBRATION:
        from lib.data import calibration as module
    elif name in _SOURCES:
        from lib.data import sources as module
    elif name == "DataError":
        from lib.data import registry as module
    elif name == "tokenizer_key":
        from lib.data import token_cache as module
    else:
        raise AttributeError(f"module 'lib.data' has no attribute {name!r}")
    return getattr(module, name)
