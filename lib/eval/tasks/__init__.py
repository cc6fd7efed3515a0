"""The evaluation tasks: examples (SQuAD v2, GSM8K and BoolQ evaluators, bound to their datasets by name),
zeroshot (the multiple-choice suite's scorer), zeroshot_registry (its task spec and registry) and
zeroshot_tasks/ (the built-in suite, one module per task)."""
