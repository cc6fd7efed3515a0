"""Thin fine-tuning entry points over lib.training.run (run from the repository root)."""
