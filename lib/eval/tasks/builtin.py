"""The built-in tasks and groups, registered in this order when `lib.eval.tasks` is imported.

The order is the order of `--tasks` choices, and the zeroshot group's: the pruning papers' suite BoolQ,
RTE, HellaSwag, WinoGrande, ARC-e, ARC-c, OBQA, plus PIQA. A new task's module gets one line here.
"""

from lib.eval.tasks.task import Group, register_group

ZEROSHOT = register_group(Group("zeroshot", "Zero-shot", metrics=("acc", "acc_norm"), score="acc"))

from lib.eval.tasks import text, squad, gsm8k, boolq, rte, hellaswag, winogrande, arc, openbookqa, piqa  # noqa: E402, F401, I001
