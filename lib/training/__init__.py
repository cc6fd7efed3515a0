"""Layer `training`: sparsity-preserving fine-tuning with the Hugging Face Trainer.

args (the fine-tuning CLIs' dataclasses for HfArgumentParser), data (prompt + target features,
causal-LM windows, the padding collator), sparsity (the mask and its Trainer callback, usable with any
Trainer), checkpoints (which checkpoint-N is complete; --resume_from_checkpoint), run (`main(task)`:
the dense_ft/ entry points). Imports `lib.core`, `lib.models`, `lib.data` and `lib.tiered` (the tier map).
"""
