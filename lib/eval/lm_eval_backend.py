"""The optional lm-evaluation-harness backend of scripts/eval_tasks.py (--backend lm-eval).

lm-eval loads its own copies of the datasets (from the Hub or its cache), so this needs network
access or a warm HF datasets cache; `--backend ours` (lib.eval.runner) evaluates offline from --data_dir.
"""

from __future__ import annotations

from torch import nn

from lib.eval.tasks.task import get, names


def lm_eval_tasks() -> dict[str, str]:
    """{our task: its lm-eval task} of every registered task with an lm-eval twin (`Task.lm_eval`)."""
    return {name: get(name).lm_eval.task for name in names() if get(name).lm_eval is not None}


class BackendError(RuntimeError):
    """The optional lm-eval backend is missing or could not run; the message says what to do."""


def require_lm_eval() -> None:
    """Raise BackendError when the optional `lm_eval` package is not installed."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise BackendError("--backend lm-eval needs lm-evaluation-harness: `pip install lm-eval` (or use --backend ours)")


def evaluate_lm_eval(
    model: nn.Module, tokenizer, task: str, limit: int | None, batch_size: int, num_fewshot: int
) -> dict:
    """Run `task` (one of `lm_eval_tasks()`) through lm-evaluation-harness on the in-memory model.

    lm-eval loads its own copies of the datasets (from the Hub or its cache), so this needs
    network access or a warm HF datasets cache. Its metric names are kept as it reports them.
    """
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm_task = lm_eval_tasks()[task]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        output = simple_evaluate(model=lm, tasks=[lm_task], num_fewshot=num_fewshot or None, limit=limit)
    except Exception as err:  # lm-eval surfaces dataset download failures as many exception types
        raise BackendError(
            f"lm-eval could not run {lm_task!r} ({err.__class__.__name__}: {err}); it needs its datasets from the "
            "Hub or a warm cache. Use --backend ours to evaluate offline from --data_dir."
        ) from err
    results = output["results"][lm_task]
    metrics = {key: value for key, value in results.items() if isinstance(value, (int, float)) and key != "alias"}
    counts = {"total": output.get("n-samples", {}).get(lm_task, {}).get("effective"), "lm_eval_task": lm_task}
    return {"metrics": metrics, "counts": counts, "samples": None}
