"""The zero-shot task spec and its registry: a `ZeroShotTask` says where a task's rows live and how a row becomes a
multiple-choice `Question` (lm-eval's prompt). The built-in specs are `lib.eval.tasks.zeroshot_tasks`, one
module each, registered in suite order when `lib.eval.tasks.zeroshot` (the scorer) is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lib.core.registry import register_unique

TARGET_DELIMITER = " "  # lm-eval's default target_delimiter between context and choice


@dataclass(frozen=True)
class Question:
    """One multiple-choice item: choice i is scored as log p(continuations[i] | contexts[i]).

    contexts, continuations: K strings each (K >= 2).
    choices: K strings whose character lengths normalize acc_norm (lm-eval's doc_to_choice).
    gold: index of the correct choice.
    """

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    choices: tuple[str, ...]
    gold: int


def shared_context(context: str, choices: Sequence[str], gold: int) -> Question:
    """The usual layout: one context (doc_to_text), each choice appended after a space."""
    return Question((context,) * len(choices), tuple(TARGET_DELIMITER + c for c in choices), tuple(choices), gold)


def shared_continuation(contexts: Sequence[str], continuation: str, gold: int) -> Question:
    """lm-eval's partial evaluation (WinoGrande): the context differs per choice, the continuation is shared.

    lm-eval's doc_to_choice is then the list of contexts, so acc_norm divides by their lengths.
    """
    k = len(contexts)
    return Question(tuple(contexts), (TARGET_DELIMITER + continuation,) * k, tuple(contexts), gold)


@dataclass(frozen=True)
class ZeroShotTask:
    """One zero-shot task: its data (local file or Hub split) and its lm-eval prompt.

    name: registry key, also the local folder: DATA_DIR/<name>/<local_file>.
    title: display name ("ARC-e").
    hub: (Hub id, config or None, split) loaded when no data directory is given.
    fields: the record fields `parse` reads (checked first, for a clear error).
    parse: record (a dict with the Hub's field names) -> Question, with lm-eval's text.
    lm_eval_task: the lm-evaluation-harness task this reproduces.
    prompt: the prompt, in words, for the docs and --help.
    id_field: a record field that identifies the example (else its index in the split).
    """

    name: str
    title: str
    hub: tuple[str, str | None, str]
    fields: tuple[str, ...]
    parse: Callable[[dict], Question]
    lm_eval_task: str
    prompt: str
    local_file: str = "validation.jsonl"
    id_field: str | None = None

    @property
    def layout(self) -> str:
        return f"{self.name}/{self.local_file}"


_REGISTRY: dict[str, ZeroShotTask] = {}


def register(task: ZeroShotTask) -> ZeroShotTask:
    """Add a spec to the registry (its name must be new); returns it, so a spec module can keep a handle."""
    return register_unique(_REGISTRY, task.name, task, "zero-shot task")


def registered() -> Mapping[str, ZeroShotTask]:
    """The tasks registered so far, in registration order (`lib.eval.tasks.zeroshot.registry` has the built-ins)."""
    return _REGISTRY
