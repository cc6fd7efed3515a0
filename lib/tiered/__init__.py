"""Layer `tiered`: the tier map and the compact tiered format built on it.

tier_map (tier codes, TierMetadata and the toolkit's block-size / top-k defaults, tier-map files),
tiles (pure tiling into b x b blocks), format (encode / decode / validate one matrix), checkpoint
(compressed model directories: save / load), cost (stored bytes and MACs), matmul (the reference
hybrid matmul). Imports only `lib.core`: functions that encode a model's weights take them from
the caller (`lib.models.arch.decoder_linear_weights`).
"""
