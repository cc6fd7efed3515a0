"""The evaluation tasks: `task` (the Task and Metric types, the one registry of tasks and groups) and one
module per built-in task, registered in suite order by `builtin` when this package is imported. No torch:
the runners are lib.eval.perplexity, lib.eval.multiple_choice and lib.eval.generate."""

from lib.eval.tasks import builtin  # noqa: F401  (registers the built-in tasks and groups)
