"""Layer `eval`: scoring a model on the tasks.

tasks/ (the one registry of evaluation tasks and groups: each `Task` declares its output type, dataset, prompt,
metrics and lm-eval twin; no torch), one runner per output type (perplexity: Wanda's protocol; multiple_choice:
lm-eval's log-likelihood scoring; generate: greedy generation scored by the task's hook), scoring (token
log-likelihoods in chunks), batching (length-sorted batches by rows or padded tokens; no torch), loglikelihood
(continuation scores, one forward per shared context), generation (greedy generation), metrics (SQuAD / GSM8K answer
matching), report (the task report layout: per-example values and their standard errors, groups; no torch),
runner (`evaluate_tasks`: dispatches each task on its output type and adds `tasks_info`) and lm_eval_backend
(the optional lm-evaluation-harness backend). Imports `lib.core`, `lib.models` and `lib.data`.
"""
