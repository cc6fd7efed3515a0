"""Layer `experiments`: the experiment matrix and its summary, from the JSON files the runs leave.

design (the rows: which data each row calibrates and fine-tunes with), rows (one Row per evaluated
model, read from the output layout), summary (results.md: tables, paired-bootstrap differences,
verdicts), plots (results.png and the cost / quality frontier). No torch at import: imports `lib.core`,
`lib.data.registry`, `lib.eval.report`, the task metadata `lib.eval.tasks` and `lib.training.checkpoints` only.
"""
