"""Layer `pruning`: choosing which weights to keep, and the driver that applies it to a model.

The math, torch and the tier map only (`lib.tiered`): masks (scores, unstructured / N:M / three-tier
keep masks), allocation (tier counts per matrix, layer or model; OWL), sparsegpt (the OBS
reconstruction), stats (activation accumulators). Then methods (the SCORES and PATTERNS registries),
capture (what each decoder layer receives), driver (PruneConfig, prune_model: one driver for every
method and architecture) and report (tier-map figures). Imports `lib.core`, `lib.tiered`, `lib.models`;
importing `lib.pruning.masks` does not import the driver.
"""
