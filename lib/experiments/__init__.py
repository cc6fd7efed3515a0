"""Layer `experiments`: the experiment matrix, its runner and its summary.

design (the rows, presets, comparisons and expectations), settings (every variable of a run: default, flag,
check), layout (every path under OUT), plan (the steps and their commands), markers (markers/<step>.done),
runner (runs the plan: markers, resume, logs, dry run, summary step), rows (one Row per evaluated model, read
from the layout), summary (results.md: tables, paired-bootstrap differences, verdicts, from the reports'
tasks_info), plots (results.png and the cost / quality frontier). No torch at import: imports `lib.core`,
`lib.data.registry`, `lib.eval.report`, the task metadata `lib.eval.tasks` and `lib.training.checkpoints` only.
"""
