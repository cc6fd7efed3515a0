"""Layer `models`: causal LMs as this toolkit sees them.

arch (the decoder layout found by rule: layers, prunable Linears, their weights and sparsity),
checks (no code from a model directory, causal-decoder probe, --seqlen against positions),
weights (a directory's weight files against its config.json), loading (aliases, GGUF conversion,
load_model / load_tokenizer, dtype and device, the inputs a run reads). Imports `lib.core` and
`lib.tiered` (a tiered directory loads like any other).
"""
