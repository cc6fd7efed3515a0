"""Helpers shared by many tests: repository paths, the tiny tokenizer and models, structural checks of masks,
and what the CLI tests share (one-line errors, directory listings, fine-tune arguments). Fixtures are conftest.py's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.pruning.driver import PruneConfig, prune_model
from lib.pruning.masks import expand_tier_map
from lib.tiered.tier_map import DENSE, NM, TOPK

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "sample_data"
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = REPO / "tests" / "fixtures"

TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Question: Answer: Context:",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "0 1 2 3 4 5 6 7 8 9 #### $ , . ? ! yes no unanswerable Let's solve this step by step:",
    "A pruned network keeps its most important weights and drops the rest.",
]


def make_tokenizer():
    """A 400-token byte-level BPE tokenizer with <s>, </s> (EOS) and a distinct <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(TOKENIZER_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def make_llama(vocab_size: int = 400, seed: int = 0):
    """Random 2-layer Llama, hidden 64, MLP width 88 (not a multiple of 16)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=88, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def make_opt(vocab_size: int = 400, seed: int = 0):
    """Random 2-layer OPT, hidden 64, FFN width 90 (not a multiple of 4)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    config = OPTConfig(
        vocab_size=vocab_size, hidden_size=64, ffn_dim=90, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=64, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )
    return OPTForCausalLM(config).eval()


def check_structure(keep, tier_map, block_size, k):
    """Assert every structural promise of a three-tier mask; return per-tier kept counts."""
    out_features, in_features = keep.shape
    tiers = expand_tier_map(tier_map, block_size, out_features, in_features)
    assert keep[tiers == DENSE].all(), "dense blocks must be untouched"
    for r in range(tier_map.shape[0]):
        for c in range(tier_map.shape[1]):
            block = keep[r * block_size : (r + 1) * block_size, c * block_size : (c + 1) * block_size]
            if tier_map[r, c] == NM:
                for g in range(0, block.shape[1], 4):
                    group = block[:, g : g + 4]
                    assert (group.sum(1) == min(2, group.shape[1])).all(), "2:4 group must keep exactly 2"
            elif tier_map[r, c] == TOPK:
                assert block.sum() == min(k, block.numel()), "top-k block must keep exactly k"


# ---------------------------------------------------------------- tiered round trips


INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a float tensor (so -0.0 and +0.0 differ)."""
    return t.view(INT_VIEW[t.dtype])


def prune_tiny_llama(config: PruneConfig, dtype=torch.float32):
    """(a tiny random Llama pruned by `config` on 4 random samples, then cast to `dtype`; its tier maps)."""
    model = make_llama()
    samples = [torch.randint(0, 400, (1, 32), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    tier_maps = prune_model(model, samples, config, progress=False).tier_maps
    return model.to(dtype), tier_maps


def state_bits(model) -> dict[str, torch.Tensor]:
    """The raw bits of every tensor of the model's state dict."""
    return {k: bits(v) for k, v in model.state_dict().items()}

# ---------------------------------------------------------------- CLI runs

BASE = ["--data_dir", str(SAMPLE_DATA), "--nsamples", "2", "--seqlen", "32", "--device", "cpu", "--no_eval"]


def listing(root: Path) -> dict[str, bytes | None]:
    """Every path under root (hidden ones included) with its bytes (None for directories)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def one_line_error(capsys, code: int | None) -> str:
    """The error line a CLI printed last (progress bars of model loading may come before it), no traceback."""
    stderr = capsys.readouterr().err.strip()
    err = stderr.splitlines()[-1] if stderr else ""
    assert code not in (0, None), stderr
    assert err.startswith("error:") and "Traceback" not in stderr and stderr.count("error:") == 1, stderr
    return err


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def finetune_argv(model_dir, data_dir, output_dir, *extra) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--data_dir", str(data_dir), "--output_dir", str(output_dir),
            "--max_train_samples", "4", "--max_eval_samples", "0", "--max_length", "128",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--report_to", "none",
            "--disable_tqdm", "true", "--dataloader_num_workers", "0", *extra]


def finetune_value_is_refused(tmp_path, capsys, flag, value, message) -> None:
    """`flag value` makes the squad fine-tune CLI exit 2 with one line holding `message`, before writing anything."""
    from lib.training.args import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args("squad", [flag, value, "--output_dir", str(tmp_path / "ft")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- tiny task data

BOOLQ = [
    {"passage": "The fox is brown.", "question": "is the fox brown", "answer": True},
    {"passage": "The dog is lazy and sleeps all day long.", "question": "is the dog fast", "answer": False},
    {"passage": "Weights are pruned.", "question": "are all weights kept", "answer": False},
    {"passage": "Natalia sold 48 clips.", "question": "did natalia sell 100 clips", "answer": False},
]


SQUAD = [
    {"id": "a", "title": "t", "context": "The fox is brown.", "question": "What color is the fox?", "answers": ["brown"]},
    {"id": "b", "title": "t", "context": "The dog sleeps.", "question": "What does the cat eat?", "answers": []},
    {"id": "c", "title": "t", "context": "Natalia sold 48 clips.", "question": "Who sold clips?", "answers": ["Natalia", "Natalia"]},
]


GSM8K = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\n48+24 = <<48+24=72>>72\n#### 72"},
    {"question": "A fox has 3 legs more than 1. How many legs?", "answer": "1+3 = 4\n#### 4"},
]


WIKI_TEXT = " = Pruning = \n\n" + "A pruned network keeps its most important weights and drops the rest . " * 30 + "\n"


def write_task_data(root):
    """Tiny files in the official layouts (SQuAD v2 JSON, GSM8K/BoolQ jsonl, WikiText-2 raw)."""
    (root / "squad").mkdir(parents=True)
    (root / "gsm8k").mkdir(parents=True)
    (root / "boolq").mkdir(parents=True)
    (root / "wikitext2").mkdir(parents=True)
    qas = [
        {"id": ex["id"], "question": ex["question"], "is_impossible": not ex["answers"],
         "answers": [{"text": a, "answer_start": ex["context"].find(a)} for a in ex["answers"]]}
        for ex in SQUAD
    ]
    squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": ex["context"], "qas": [qa]} for ex, qa in zip(SQUAD, qas)]}]}
    (root / "squad" / "dev-v2.0.json").write_text(json.dumps(squad))
    (root / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(ex) + "\n" for ex in GSM8K))
    (root / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(ex) + "\n" for ex in GSM8K[::-1]))
    (root / "boolq" / "dev.jsonl").write_text("".join(json.dumps({**ex, "title": "t"}) + "\n" for ex in BOOLQ))
    (root / "wikitext2" / "wiki.test.raw").write_text(WIKI_TEXT)
    return root


def default_model_weights(*names: str) -> list[torch.Tensor]:
    """The named tensors of the installed default model as float32 (the test is skipped when it is not installed)."""
    from safetensors import safe_open

    from lib.core.errors import ModelLoadError
    from lib.models.loading import DEFAULT_MODEL, resolve_model_path

    try:
        path = Path(resolve_model_path(DEFAULT_MODEL))
    except ModelLoadError:
        pytest.skip("the default model is not installed")
    with safe_open(str(next(path.glob("*.safetensors"))), framework="pt") as f:
        return [f.get_tensor(name).float() for name in names]
