"""Wanda hybrid pruning toolkit: three-tier block pruning, task calibration, fine-tuning, evaluation.

`lib` is in layers, one package each, bottom to top. A layer imports itself and what its row names,
nothing else in `lib`, and never the entry points (main_block_three_tier.py, scripts/, dense_ft/);
tests/test_layers.py checks every import against the same table (ALLOWED there) and finds no cycles.

    layer         what it holds                                          may import
    core          CLI plumbing, the output rule, results, paths, errors  (nothing in lib)
    tiered        tier maps, the tiered format, checkpoints, cost        core
    models        decoder layout, loading, model checks                  core, tiered
    data          dataset registry, readers, calibration samples         core
    pruning       mask math, allocation, SparseGPT, the driver           core, tiered, models
    eval          scoring, perplexity, tasks, the task runner            core, models, data
    training      sparsity-preserving fine-tuning                        core, models, data, tiered
    experiments   the experiment matrix and its summary (no torch)       core, data.registry, eval.report,
                                                                         eval.tasks, training.checkpoints

Package `__init__` files hold a docstring only (lib.data also re-exports Wanda's `get_loaders` and
its other public names, imported on first use).
"""
