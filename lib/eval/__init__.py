"""Layer `eval`: scoring a model on the tasks.

scoring (token log-likelihoods in chunks), generation (greedy generation, continuation scores),
perplexity (Wanda's protocol), metrics (SQuAD / GSM8K answer matching), report (the task report
layout: per-example values and their standard errors, no torch), runner (`evaluate_tasks`: the
perplexity tasks, the example tasks and the zero-shot suite), lm_eval_backend (the optional
lm-evaluation-harness backend) and tasks/ (the evaluators of the example tasks and the zero-shot
suite with its registry). Imports `lib.core`, `lib.models` and `lib.data`.
"""
