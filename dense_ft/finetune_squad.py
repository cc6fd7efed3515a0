"""Sparsity-preserving fine-tuning on SQuAD v2 (prompt + first gold answer or the no-answer string; eval on dev).

    python dense_ft/finetune_squad.py --model_name_or_path out/pruned --data_dir DATA --output_dir out/ft_squad
    torchrun --nproc_per_node 2 dense_ft/finetune_squad.py ...   # DDP; every Trainer flag works (--help)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.training.run import main  # noqa: E402

if __name__ == "__main__":
    main("squad")
