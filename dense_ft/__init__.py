"""Thin fine-tuning entry points over lib.finetune (run from the repository root)."""
