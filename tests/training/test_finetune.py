"""Sparsity-preserving fine-tuning (lib/training/run.py, dense_ft/*.py) on a tiny random Llama pruned three-tier (CPU)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lib.data.prompts import NO_ANSWER, squad_prompt
from lib.models.arch import decoder_linear_weights, find_linears, get_decoder_layers
from lib.pruning.masks import three_tier_mask
from lib.tiered.tier_map import TIER_MAP_FILE, TierMetadata, load_tier_maps, save_tier_maps
from lib.training.args import check_precision, parse_args
from lib.training.data import IGNORE_INDEX, PadCollator, encode_prompt_target
from lib.training.run import main
from lib.training.sparsity import SparsityCallback, SparsityMask, tensors_sha256
from tests.helpers import REPO, SAMPLE_DATA, make_llama

CONTEXT = "The quick brown fox jumps over the lazy dog."

def pruned_llama(seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Tiny Llama with every decoder Linear pruned three-tier (random act_norm_sq); returns (model, tier maps)."""
    model = make_llama(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    tier_maps = {}
    with torch.no_grad():
        for i, layer in enumerate(get_decoder_layers(model)):
            for name, linear in find_linears(layer).items():
                act_norm_sq = torch.rand(linear.in_features, generator=generator) + 0.1
                keep, tier_map = three_tier_mask(linear.weight, act_norm_sq, block_size=16, topk_per_block=15)
                linear.weight.mul_(keep)
                tier_maps[f"model.layers.{i}.{name}"] = tier_map
    return model, tier_maps


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: (w == 0).clone() for name, w in decoder_linear_weights(model).items()}


def load_saved(path) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


@pytest.fixture(scope="session")
def pruned_llama_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("pruned_llama")
    model, tier_maps = pruned_llama()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    save_tier_maps(path / TIER_MAP_FILE, tier_maps, TierMetadata(16, (0.35, 0.45, 0.2)))
    return path


@pytest.fixture(scope="session")
def task_data_dir():
    """The in-repo sample data (official SQuAD v2 / GSM8K / WikiText-2 layouts, original text)."""
    assert (SAMPLE_DATA / "squad" / "train-v2.0.json").is_file(), "sample_data/ is missing"
    return SAMPLE_DATA


@pytest.fixture(autouse=True)
def isolated_cpu(tmp_path_factory, monkeypatch):
    """Token caches under the test's temp dir; one intra-op thread (the 2 shared cores thrash otherwise)."""
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path_factory.getbasetemp() / "wanda_cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def finetune_args(model_dir, data_dir, output_dir, *extra) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--max_train_samples", "4", "--max_eval_samples", "4", "--max_length", "512",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--learning_rate", "1e-3", "--weight_decay", "0.1", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0", *extra,
    ]


def step_losses(output_dir) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [log["loss"] for log in state["log_history"] if "loss" in log]


def assert_pattern_kept_and_trained(source_dir, output_dir):
    """Same set of zeros as the source model (bool masks, not counts); the kept weights did change."""
    source, tuned = load_saved(source_dir), load_saved(output_dir)
    source_zeros, tuned_zeros = zero_masks(source), zero_masks(tuned)
    assert source_zeros.keys() == tuned_zeros.keys() and len(source_zeros) == 14  # 2 layers x 7 Linears
    for name in source_zeros:
        assert torch.equal(source_zeros[name], tuned_zeros[name]), name
    source_weights = decoder_linear_weights(source)
    changed = [not torch.equal(w, source_weights[name]) for name, w in decoder_linear_weights(tuned).items()]
    assert all(changed)


# ---------------------------------------------------------------- datasets and collator


def test_encode_prompt_target_puts_loss_on_the_answer_only(tokenizer):
    prompt = squad_prompt(CONTEXT, "What is the dog?")
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer(" lazy", add_special_tokens=False)["input_ids"]
    feature = encode_prompt_target(tokenizer, prompt, " lazy", max_length=512)
    assert feature["input_ids"] == prompt_ids + answer_ids + [tokenizer.eos_token_id]
    assert feature["labels"] == [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [tokenizer.eos_token_id]

    cut = encode_prompt_target(tokenizer, prompt, " lazy", max_length=len(prompt_ids) + 1)
    assert cut["labels"] == [IGNORE_INDEX] * len(prompt_ids) + answer_ids[:1]
    assert encode_prompt_target(tokenizer, prompt, " lazy", max_length=len(prompt_ids)) is None


def test_unanswerable_squad_target_is_the_shared_no_answer_string(tokenizer):
    from lib.training.data import build_task_dataset

    example = {"context": CONTEXT, "question": "Why?", "answers": []}
    (feature,) = build_task_dataset("squad", [example], tokenizer, max_length=512)
    answer = [t for t, label in zip(feature["input_ids"], feature["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(answer[:-1]) == " " + NO_ANSWER and answer[-1] == tokenizer.eos_token_id


def test_collator_pads_each_batch_to_its_longest_and_ignores_padding():
    eos = pad = 2  # pad == EOS, as for SmolLM2: the trained EOS label must survive
    features = [{"input_ids": [5, 6, eos], "labels": [-100, 6, eos]}, {"input_ids": [7], "labels": [7]}]
    batch = PadCollator(pad_token_id=pad)(features)
    assert batch["input_ids"].tolist() == [[5, 6, eos], [7, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, eos], [7, -100, -100]]
    assert PadCollator(pad_token_id=pad, pad_to_multiple_of=4)(features)["input_ids"].shape == (2, 4)


# ---------------------------------------------------------------- the mask


def adamw_steps(model, mask: SparsityMask | None, steps: int = 3) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = torch.randint(4, 400, (2, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        if mask is not None:
            mask.apply(model)
        optimizer.zero_grad()


def test_mask_zeroes_pruned_gradients_and_keeps_the_zero_pattern():
    model, _ = pruned_llama()
    before = zero_masks(model)
    mask = SparsityMask.from_model(model)
    assert set(mask.keep) == set(before) and mask.n_pruned == sum(int(z.sum()) for z in before.values())
    mask.register_gradient_hooks(model)
    ids = torch.randint(4, 400, (2, 12), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    for name, weight in decoder_linear_weights(model).items():
        assert weight.grad[before[name]].abs().max() == 0
        assert weight.grad[~before[name]].abs().max() > 0
    model.zero_grad()
    adamw_steps(model, mask)
    assert mask.unchanged(model)
    assert all(torch.equal(before[n], z) for n, z in zero_masks(model).items())

    mask.remove_hooks()  # the control: plain AdamW densifies the pruned model
    plain, _ = pruned_llama()
    adamw_steps(plain, None)
    assert not mask.unchanged(plain) and sum(int(z.sum()) for z in zero_masks(plain).values()) == 0


@pytest.mark.parametrize("with_callback", [True, False])
def test_callback_keeps_the_pattern_under_a_trainer_subclass(with_callback, tokenizer, tmp_path):
    """SparsityCallback is all another trainer needs (the README's TRL recipe); without it the model densifies."""
    from transformers import Trainer, TrainingArguments

    class WeightedLossTrainer(Trainer):  # a subclass with its own loss, like TRL's SFTTrainer
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            outputs = model(**inputs)
            return (2.0 * outputs.loss, outputs) if return_outputs else 2.0 * outputs.loss

    model, _ = pruned_llama()
    mask = SparsityMask.from_model(model)
    features = [encode_prompt_target(tokenizer, "The quick brown", " fox jumps", 64)] * 8
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
                             weight_decay=0.1, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = WeightedLossTrainer(model=model, args=args, train_dataset=features,
                                  data_collator=PadCollator(tokenizer.pad_token_id),
                                  callbacks=[SparsityCallback(mask)] if with_callback else None)
    trainer.train()
    assert mask.unchanged(trainer.model) is with_callback


def test_incidental_zeros_below_min_layer_sparsity_are_not_a_mask():
    model = make_llama()
    weights = decoder_linear_weights(model)
    name = next(iter(weights))
    with torch.no_grad():
        weights[name].view(-1)[:3] = 0.0  # 3 zeros in 64*64: 0.07%, like a dequantized GGUF model
    assert SparsityMask.from_model(model, min_layer_sparsity=0.01).keep == {}
    assert list(SparsityMask.from_model(model, min_layer_sparsity=0.0).keep) == [name]
    assert list(SparsityMask.from_model(model, required=[name]).keep) == [name]


def test_gradient_is_masked_before_the_ddp_allreduce(tmp_path):
    """A DDP comm hook sees every bucket before the all-reduce: pruned entries must already be zero."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model, _ = pruned_llama()
    mask = SparsityMask.from_model(model)
    pruned_ids = {id(model.get_parameter(name)): ~keep for name, keep in mask.keep.items()}
    seen = []

    def check_bucket(state, bucket):
        for param, grad in zip(bucket.parameters(), bucket.gradients()):
            if id(param) in pruned_ids:
                seen.append(bool(grad[pruned_ids[id(param)]].abs().max() == 0))
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model)
        mask.register_gradient_hooks(model)
        ddp.register_comm_hook(None, check_bucket)
        ids = torch.randint(4, 400, (2, 12), generator=torch.Generator().manual_seed(0))
        ddp(input_ids=ids, labels=ids).loss.backward()
    finally:
        dist.destroy_process_group()
    assert len(seen) == len(mask.keep) and all(seen)


# ---------------------------------------------------------------- arguments


def test_precision_the_device_cannot_do_is_a_one_line_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only message")
    with pytest.raises(ValueError, match="--fp16 needs a CUDA GPU"):
        check_precision(bf16=False, fp16=True, use_cpu=False)
    check_precision(bf16=True, fp16=False, use_cpu=True)  # CPU bfloat16 autocast is allowed when asked for
    with pytest.raises(SystemExit) as exit_info:
        parse_args("squad", ["--bf16", "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert "--bf16 was requested but no CUDA GPU is available" in error


@pytest.mark.parametrize("flag, value", [("--max_length", "0"), ("--max_train_samples", "0"),
                                         ("--min_layer_sparsity", "1.5")])
def test_bad_values_name_the_flag(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args("squad", [flag, value, "--output_dir", str(tmp_path)])
    assert flag in capsys.readouterr().err


def test_lm_arguments_have_dataset_and_block_size(tmp_path):
    _, data_args, training_args = parse_args("lm", ["--dataset_name", "c4", "--block_size", "64",
                                                    "--output_dir", str(tmp_path)])
    assert (data_args.dataset_name, data_args.block_size) == ("c4", 64)
    assert not hasattr(data_args, "max_length")
    with pytest.raises(SystemExit):
        parse_args("lm", ["--dataset_name", "ptb", "--output_dir", str(tmp_path)])


def test_tier_map_outside_the_schema_stops_before_training(pruned_llama_dir, task_data_dir, tmp_path, capsys):
    """The tier map's TierMetadata is checked before training: one line naming the file and the key, exit 2."""
    model_dir = Path(shutil.copytree(pruned_llama_dir, tmp_path / "model"))
    maps, _ = load_tier_maps(model_dir / TIER_MAP_FILE)
    save_file(maps, str(model_dir / TIER_MAP_FILE), metadata={"block_size": "6"})
    with pytest.raises(SystemExit) as exit_info:
        main("squad", finetune_args(model_dir, task_data_dir, tmp_path / "out", "--max_steps", "1"))
    lines = capsys.readouterr().err.strip().splitlines()  # the log lines of loading, then the error
    (error,) = [line for line in lines if line.startswith("error:")]
    assert exit_info.value.code == 2 and lines[-1] == error == (f"error: {model_dir / TIER_MAP_FILE}: tier-map metadata: block_size 6 "
                                                   "is not a positive multiple of 4 (2:4 groups must stay inside blocks)")
    assert not (tmp_path / "out" / "trainer_state.json").exists()


# ---------------------------------------------------------------- fine-tuning runs


@pytest.mark.slow
@pytest.mark.parametrize("task, accumulation", [("squad", 1), ("gsm8k", 1), ("gsm8k", 2)])
def test_finetune_keeps_the_exact_zero_pattern(task, accumulation, pruned_llama_dir, task_data_dir, tmp_path):
    output_dir = tmp_path / "ft"
    batch = str(4 // accumulation)
    extra = ["--max_steps", "5", "--per_device_train_batch_size", batch,
             "--gradient_accumulation_steps", str(accumulation)]
    if task == "squad":  # evaluation before and during training, best checkpoint restored at the end
        extra += ["--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
                  "--load_best_model_at_end", "--eval_on_start"]
    results = main(task, finetune_args(pruned_llama_dir, task_data_dir, output_dir, *extra))

    losses = step_losses(output_dir)
    assert len(losses) == 5 and losses[-1] < losses[0]  # every step sees the same 4 examples
    assert_pattern_kept_and_trained(pruned_llama_dir, output_dir)
    sparsity = json.loads((output_dir / "sparsity.json").read_text())
    assert sparsity["preserved"] and sparsity["zero_pattern_unchanged"] and sparsity["n_masked_weights"] == 14
    assert sparsity["start"] == sparsity["end"] and 0.2 < sparsity["start"]["sparsity"] < 0.5
    train_metrics = json.loads((output_dir / "train_results.json").read_text())
    assert train_metrics["sparsity_start"] == train_metrics["sparsity_end"] == sparsity["start"]["sparsity"]
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "tokenizer.json").is_file()
    assert (output_dir / TIER_MAP_FILE).read_bytes() == (pruned_llama_dir / TIER_MAP_FILE).read_bytes()
    assert results["eval"]["eval_loss"] > 0
    if task == "squad":
        assert results["eval_loss_start"] is not None and results["eval"]["eval_loss"] < results["eval_loss_start"]


@pytest.mark.slow
def test_resume_from_checkpoint_keeps_the_zero_pattern(pruned_llama_dir, task_data_dir, tmp_path):
    """3 steps with a checkpoint, resumed to 5, ends exactly where an uninterrupted 5-step run ends."""
    common = ["--lr_scheduler_type", "constant"]
    resumed = tmp_path / "resumed"
    main("squad", finetune_args(pruned_llama_dir, task_data_dir, resumed, "--max_steps", "3", *common,
                                "--save_strategy", "steps", "--save_steps", "3", "--max_eval_samples", "0"))
    assert_pattern_kept_and_trained(pruned_llama_dir, resumed / "checkpoint-3")
    results = main("squad", finetune_args(pruned_llama_dir, task_data_dir, resumed, "--max_steps", "5", *common,
                                          "--max_eval_samples", "0",
                                          "--resume_from_checkpoint", str(resumed / "checkpoint-3")))
    assert results["train"]["zero_pattern_unchanged"]
    assert json.loads((resumed / "trainer_state.json").read_text())["global_step"] == 5
    assert_pattern_kept_and_trained(pruned_llama_dir, resumed)

    straight = tmp_path / "straight"
    main("squad", finetune_args(pruned_llama_dir, task_data_dir, straight, "--max_steps", "5", *common,
                                "--max_eval_samples", "0"))
    expected = dict(load_saved(straight).named_parameters())
    for name, param in load_saved(resumed).named_parameters():
        torch.testing.assert_close(param, expected[name], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_plain_finetuning_densifies_and_a_dense_model_trains_normally(
        pruned_llama_dir, tiny_llama_dir, task_data_dir, tmp_path, caplog):
    plain = main("gsm8k", finetune_args(pruned_llama_dir, task_data_dir, tmp_path / "plain", "--max_steps", "1",
                                        "--max_eval_samples", "0", "--no_preserve_sparsity"))
    assert plain["sparsity"]["end"]["zeros"] == 0 and plain["train"]["sparsity_start"] > 0.2
    assert "densify" in caplog.text

    caplog.clear()
    dense = main("gsm8k", finetune_args(tiny_llama_dir, task_data_dir, tmp_path / "dense", "--max_steps", "1",
                                        "--max_eval_samples", "0"))
    assert "dense model" in caplog.text
    assert dense["sparsity"]["preserved"] is False and dense["sparsity"]["zero_pattern_unchanged"] is None
    assert not (tmp_path / "dense" / TIER_MAP_FILE).exists()


@pytest.mark.slow
def test_finetune_lm_on_wikitext2_windows(pruned_llama_dir, task_data_dir, tmp_path):
    output_dir = tmp_path / "lm"
    args = finetune_args(pruned_llama_dir, task_data_dir, output_dir, "--max_steps", "2",
                         "--max_eval_samples", "2")
    args.remove("--max_length")
    args.remove("512")
    results = main("lm", [*args, "--dataset_name", "wikitext2", "--block_size", "64"])
    assert results["train"]["train_samples"] == 4 and results["eval"]["eval_samples"] == 2
    assert_pattern_kept_and_trained(pruned_llama_dir, output_dir)


@pytest.mark.slow
def test_torchrun_two_ranks_end_identical(pruned_llama_dir, task_data_dir, tmp_path):
    """The real script under torchrun (2 CPU processes, gloo): both ranks hold the same weights and zeros."""
    output_dir = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "dense_ft/finetune_squad.py",
               *finetune_args(pruned_llama_dir, task_data_dir, output_dir, "--max_steps", "3",
                              "--per_device_train_batch_size", "2", "--max_eval_samples", "2")]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers
        output, _ = process.communicate()
    assert process.returncode == 0, output[-5000:]

    sparsity = json.loads((output_dir / "sparsity.json").read_text())
    ranks = sparsity["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and sparsity["ranks_identical"]
    assert all(r["zero_pattern_unchanged"] for r in ranks)
    assert_pattern_kept_and_trained(pruned_llama_dir, output_dir)
    saved = load_saved(output_dir)  # what rank 0 wrote is what both ranks hold
    assert ranks[1]["weights_sha256"] == tensors_sha256(dict(saved.named_parameters()))
    assert ranks[1]["zero_pattern_sha256"] == tensors_sha256(zero_masks(saved))
    assert json.loads((output_dir / "finetune_results.json").read_text())["world_size"] == 2
