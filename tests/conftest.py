"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny random Llama / OPT models (CPU, float32), and the
guard that a CLI does not load its model. The functions behind them are tests/helpers.py's."""

from __future__ import annotations

import pytest

from tests.helpers import make_llama, make_opt, make_tokenizer


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "real_data: needs ../shared/data")
    config.addinivalue_line("markers", "real_model: needs the embedded SmolLM2 model")


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


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


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a CLI loads the model: the error was due before."""
    import main_block_three_tier as cli
    from scripts import eval_tasks

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(cli, "load_model", refuse)
    monkeypatch.setattr(eval_tasks, "load_model", refuse)
