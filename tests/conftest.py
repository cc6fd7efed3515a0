"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny random Llama / OPT models (CPU, float32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "sample_data"
SHARED_DATA = REPO.parent / "shared" / "data"

TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Question: Answer: Context:",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "0 1 2 3 4 5 6 7 8 9 #### $ , . ? ! yes no unanswerable Let's solve this step by step:",
    "A pruned network keeps its most important weights and drops the rest.",
]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "real_data: needs ../shared/data")
    config.addinivalue_line("markers", "real_model: needs the embedded SmolLM2 model")
    config.addinivalue_line("markers", "gpu: needs CUDA")


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


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


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


@pytest.fixture
def tiny_llama():
    return make_llama()


@pytest.fixture
def tiny_opt():
    return make_opt()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer):
    """A saved tiny random Llama + tokenizer directory, loadable by lib.models.loading.load_model."""
    path = tmp_path_factory.mktemp("tiny_llama")
    make_llama().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
