"""Calibration data: Wanda's contract, packing without padding, mixtures, fallbacks, errors, token caches."""

from __future__ import annotations

import json
import logging
import random
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from lib.data import (apportion, calibration, dataset_names, get_eval_tokens, get_loaders, load_task_examples,
                      parse_mixture, resolve_data_dir, token_cache)
from lib.data.prompts import boolq_prompt, gsm8k_calibration_text, squad_prompt
from lib.data.registry import DataError
from lib.data.sources import c4_holdout
from tests.helpers import SAMPLE_DATA

EOS, PAD = 2, 3  # ids in the tiny tokenizer fixture
PROMPTS = {
    "squad": lambda ex: squad_prompt(ex["context"], ex["question"]),
    "gsm8k": lambda ex: gsm8k_calibration_text(ex["question"], ex["answer"]),
    "boolq": lambda ex: boolq_prompt(ex["passage"], ex["question"]),
}


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Token caches in a fresh directory and an empty in-process cache for every test."""
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WANDA_DATA_DIR", raising=False)
    monkeypatch.setattr(token_cache, "TOKEN_CACHE", {})


class CountingTokenizer:
    """Wraps a tokenizer and counts how often it is asked to tokenize."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def wikitext_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line if line.strip() else "" for line in f]


def prompt_ids(tokenizer, task):
    """Token ids of every train prompt of `task` in sample_data, as a set of tuples."""
    texts = [PROMPTS[task](ex) for ex in load_task_examples(task, "train", SAMPLE_DATA)]
    return {tuple(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------- Wanda's contract


def test_wikitext2_windows_follow_wanda_recipe(tokenizer):
    trainloader, testenc = get_loaders("wikitext2", nsamples=5, seed=3, seqlen=32, tokenizer=tokenizer, data_dir=SAMPLE_DATA)
    train = tokenizer(" ".join(wikitext_lines(SAMPLE_DATA / "wikitext2/wiki.train.raw")), return_tensors="pt").input_ids[0]
    rng = random.Random(3)
    assert len(trainloader) == 5
    for inp, tar in trainloader:
        start = rng.randint(0, train.numel() - 32 - 1)
        assert inp.dtype == torch.long and inp.shape == (1, 32)
        assert torch.equal(inp[0], train[start : start + 32])
        assert tar.shape == inp.shape
        assert (tar[0, :-1] == -100).all() and tar[0, -1] == inp[0, -1]
    test = tokenizer("\n\n".join(wikitext_lines(SAMPLE_DATA / "wikitext2/wiki.test.raw")), return_tensors="pt").input_ids
    assert torch.equal(testenc.input_ids, test)


def test_target_is_a_copy_not_a_view(tokenizer):
    (inp, tar), = get_loaders("gsm8k", nsamples=1, seqlen=16, tokenizer=tokenizer, data_dir=SAMPLE_DATA)[0]
    assert (inp != -100).all()  # writing -100 into tar left inp untouched


@pytest.mark.parametrize("task", ["squad", "gsm8k", "boolq"])
def test_packed_task_samples_are_whole_prompts_separated_by_eos(tokenizer, task):
    seqlen = 1024
    trainloader, testenc = get_loaders(task, nsamples=3, seed=0, seqlen=seqlen, tokenizer=tokenizer, data_dir=SAMPLE_DATA)
    prompts = prompt_ids(tokenizer, task)
    for inp, tar in trainloader:
        ids = inp[0].tolist()
        assert inp.shape == (1, seqlen)
        assert PAD not in ids
        assert ids.count(EOS) >= 1
        segments, current = [], []
        for token in ids:
            if token == EOS:
                segments.append(tuple(current))
                current = []
            else:
                current.append(token)
        assert all(segment in prompts for segment in segments)  # every complete segment is one prompt
        assert any(p[: len(current)] == tuple(current) for p in prompts)  # the cut-off tail starts a prompt
        assert (tar[0, :-1] == -100).all() and tar[0, -1] == inp[0, -1]
    wikitext_test = get_eval_tokens("wikitext2", tokenizer, SAMPLE_DATA)
    assert torch.equal(testenc.input_ids, wikitext_test)  # task datasets are scored on WikiText-2


def test_packing_none_gives_one_example_at_natural_length(tokenizer):
    prompts = prompt_ids(tokenizer, "gsm8k")
    trainloader, _ = get_loaders("gsm8k", nsamples=6, seqlen=4096, tokenizer=tokenizer, data_dir=SAMPLE_DATA, packing="none")
    lengths = set()
    for inp, tar in trainloader:
        assert tuple(inp[0].tolist()) in prompts
        assert PAD not in inp[0].tolist() and EOS not in inp[0].tolist()
        assert (tar[0, :-1] == -100).all() and tar[0, -1] == inp[0, -1]
        lengths.add(inp.shape[1])
    assert len(lengths) > 1 and max(lengths) < 4096

    truncated, _ = get_loaders("gsm8k", nsamples=4, seqlen=20, tokenizer=tokenizer, data_dir=SAMPLE_DATA, packing="none")
    for inp, _ in truncated:
        assert inp.shape == (1, 20)
        assert any(p[:20] == tuple(inp[0].tolist()) for p in prompts)


@pytest.mark.parametrize("name", ["wikitext2", "c4", "squad", "mixed"])
def test_same_seed_same_samples_other_seed_other_samples(tokenizer, name):
    def samples(seed):
        loader, _ = get_loaders(name, nsamples=4, seed=seed, seqlen=48, tokenizer=tokenizer, data_dir=SAMPLE_DATA)
        return torch.cat([inp for inp, _ in loader])  # (4, 48)

    python_state, torch_state = random.getstate(), torch.get_rng_state()
    first = samples(0)
    assert torch.equal(first, samples(0))
    assert not torch.equal(first, samples(1))
    assert random.getstate() == python_state and torch.equal(torch.get_rng_state(), torch_state)


def test_c4_windows_come_from_long_documents_and_eval_is_cut(tokenizer):
    seqlen = 64
    trainloader, testenc = get_loaders("c4", nsamples=4, seqlen=seqlen, tokenizer=tokenizer, data_dir=SAMPLE_DATA)
    documents = [json.loads(line)["text"] for line in open(SAMPLE_DATA / "c4/c4-train.sample.jsonl", encoding="utf-8")]
    doc_ids = [tokenizer(text).input_ids for text in documents]
    for inp, _ in trainloader:
        window = inp[0].tolist()
        assert any(
            len(ids) > seqlen and any(ids[i : i + seqlen] == window for i in range(len(ids) - seqlen)) for ids in doc_ids
        )
    validation = [json.loads(line)["text"] for line in open(SAMPLE_DATA / "c4/c4-validation.sample.jsonl", encoding="utf-8")]
    full = tokenizer(" ".join(validation), return_tensors="pt").input_ids
    assert full.shape[1] > 256 * 8
    assert torch.equal(get_eval_tokens("c4", tokenizer, SAMPLE_DATA, seqlen=8), full[:, : 256 * 8])
    assert torch.equal(testenc.input_ids, full[:, : 256 * seqlen])


def test_c4_seqlen_longer_than_every_document_is_an_error(tokenizer):
    with pytest.raises(ValueError, match=r"no document of .* is longer than --seqlen 100000"):
        get_loaders("c4", nsamples=1, seqlen=100_000, tokenizer=tokenizer, data_dir=SAMPLE_DATA)


# ---------------------------------------------------------------- mixtures


def test_apportion_hand_worked_cases():
    assert apportion([1, 1, 1], 128) == [43, 43, 42]
    assert apportion([0.7, 0.3], 10) == [7, 3]
    assert apportion([0.2, 0.8], 7) == [1, 6]  # quotas 1.4 / 5.6: the leftover goes to the larger remainder
    assert apportion([0.5, 0.5], 3) == [2, 1]  # tie: the earlier source
    assert apportion([Fraction(1, 3)] * 3, 2) == [1, 1, 0]
    assert apportion([0.1, 0.2, 0.7], 10) == [1, 2, 7]  # no float drift (0.1 + 0.2 != 0.3 in binary)


def test_apportion_sums_exactly_and_stays_within_one_of_the_quota():
    rng = random.Random(0)
    for _ in range(300):
        weights = [rng.randint(1, 50) for _ in range(rng.randint(1, 6))]
        total = rng.randint(0, 500)
        counts = apportion(weights, total)
        assert sum(counts) == total
        for weight, count in zip(weights, counts):
            assert abs(count - Fraction(total * weight, sum(weights))) < 1


def test_apportion_rejects_bad_weights():
    with pytest.raises(ValueError):
        apportion([0.5, 0], 4)
    with pytest.raises(ValueError):
        apportion([], 4)


def test_parse_mixture_forms():
    assert parse_mixture("gsm8k") == [("gsm8k", 1)]
    assert parse_mixture("mixed") == [("wikitext2", Fraction(1, 3)), ("squad", Fraction(1, 3)), ("gsm8k", Fraction(1, 3))]
    assert parse_mixture("wikitext2+squad") == [("wikitext2", Fraction(1, 2)), ("squad", Fraction(1, 2))]
    assert parse_mixture("wikitext2:0.7, gsm8k:0.3") == [("wikitext2", Fraction(7, 10)), ("gsm8k", Fraction(3, 10))]


@pytest.mark.parametrize(
    "name, message",
    [
        ("wikitext", "unknown calibration dataset 'wikitext'"),
        ("wikitext2+ptb", "unknown calibration dataset 'ptb' in 'wikitext2\\+ptb'"),
        ("wikitext2:0.7,gsm8k:0.2", "sum to 0.9; they must sum to 1"),
        ("wikitext2:0.7,gsm8k:x", "share 'x' of 'gsm8k'"),
        ("wikitext2:1.2,gsm8k:-0.2", "must be > 0"),
        ("squad+squad", "names a source twice"),
        ("wikitext2+gsm8k:0.5", "unknown calibration dataset"),
    ],
)
def test_parse_mixture_errors(name, message):
    with pytest.raises(ValueError, match=message):
        parse_mixture(name)


def test_unknown_name_lists_valid_names(tokenizer):
    with pytest.raises(ValueError) as err:
        get_loaders("ptb", nsamples=1, seqlen=8, tokenizer=tokenizer, data_dir=SAMPLE_DATA)
    assert all(name in str(err.value) for name in dataset_names())
    assert "wikitext2+squad" in str(err.value) and "wikitext2:0.7,gsm8k:0.3" in str(err.value)


@pytest.mark.parametrize(
    "name, nsamples, expected",
    [
        ("mixed", 128, {"wikitext2": 43, "squad": 43, "gsm8k": 42}),
        ("wikitext2:0.7,gsm8k:0.3", 10, {"wikitext2": 7, "gsm8k": 3}),
        ("c4+boolq", 5, {"c4": 3, "boolq": 2}),
    ],
)
def test_mixture_counts_are_exact_and_logged(tokenizer, monkeypatch, caplog, name, nsamples, expected):
    drawn = {}
    original = calibration.calibration_samples

    def recording(source, n, *args):
        samples = original(source, n, *args)
        drawn[source] = len(samples)
        return samples

    monkeypatch.setattr(calibration, "calibration_samples", recording)
    with caplog.at_level(logging.INFO, logger="lib.data"):
        trainloader, _ = get_loaders(name, nsamples=nsamples, seqlen=16, tokenizer=tokenizer, data_dir=SAMPLE_DATA)
    assert len(trainloader) == nsamples and drawn == expected
    assert all(inp.shape == (1, 16) for inp, _ in trainloader)
    summary = ", ".join(f"{source} {count}" for source, count in expected.items())
    assert f"calibration mixture {name}: {summary}" in caplog.text


def test_mixture_samples_match_each_source_drawn_alone(tokenizer):
    mixture, _ = get_loaders("wikitext2:0.5,gsm8k:0.5", nsamples=4, seed=5, seqlen=24, tokenizer=tokenizer, data_dir=SAMPLE_DATA)
    alone = [get_loaders(s, nsamples=2, seed=5, seqlen=24, tokenizer=tokenizer, data_dir=SAMPLE_DATA)[0] for s in ("wikitext2", "gsm8k")]
    key = lambda t: tuple(t[0].tolist())  # noqa: E731
    assert sorted(key(inp) for inp, _ in mixture) == sorted(key(inp) for loader in alone for inp, _ in loader)


# ---------------------------------------------------------------- argument errors


def test_argument_errors(tokenizer):
    with pytest.raises(ValueError, match="--calibration_packing 'pad' is not one of concat, none"):
        get_loaders("gsm8k", nsamples=1, seqlen=8, tokenizer=tokenizer, data_dir=SAMPLE_DATA, packing="pad")
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        get_loaders("gsm8k", nsamples=1, seqlen=8, data_dir=SAMPLE_DATA)
    with pytest.raises(ValueError, match="--nsamples must be a positive integer, got 0"):
        get_loaders("gsm8k", nsamples=0, seqlen=8, tokenizer=tokenizer, data_dir=SAMPLE_DATA)
    with pytest.raises(ValueError, match="perplexity dataset 'squad' is not one of wikitext2, c4"):
        get_eval_tokens("squad", tokenizer, SAMPLE_DATA)
    with pytest.raises(ValueError, match="task 'mmlu' is not one of squad, gsm8k, boolq"):
        load_task_examples("mmlu", "train", SAMPLE_DATA)
    with pytest.raises(ValueError, match="split 'test' is not one of train, eval"):
        load_task_examples("gsm8k", "test", SAMPLE_DATA)


def test_concat_packing_needs_an_eos_token(tokenizer):
    class NoEos(CountingTokenizer):
        eos_token_id = None

    with pytest.raises(ValueError, match="has none; set tokenizer.eos_token or use --calibration_packing none"):
        get_loaders("squad", nsamples=1, seqlen=8, tokenizer=NoEos(tokenizer), data_dir=SAMPLE_DATA)
    loader, _ = get_loaders("squad", nsamples=1, seqlen=8, tokenizer=NoEos(tokenizer), data_dir=SAMPLE_DATA, packing="none")
    assert loader[0][0].shape == (1, 8)


# ---------------------------------------------------------------- task examples


def test_load_task_examples_schemas_and_limit():
    squad = load_task_examples("squad", "eval", SAMPLE_DATA)
    assert set(squad[0]) == {"id", "title", "context", "question", "answers"}
    official = json.load(open(SAMPLE_DATA / "squad/dev-v2.0.json", encoding="utf-8"))
    qas = [qa for article in official["data"] for p in article["paragraphs"] for qa in p["qas"]]
    assert [ex["id"] for ex in squad] == [qa["id"] for qa in qas]
    assert all(ex["answers"] == [] for ex, qa in zip(squad, qas) if qa["is_impossible"])
    answerable = [ex for ex in squad if ex["answers"]]
    assert answerable and all(a in ex["context"] for ex in answerable for a in ex["answers"])
    assert sum(not ex["answers"] for ex in squad) == 7

    gsm8k = load_task_examples("gsm8k", "eval", SAMPLE_DATA, limit=3)
    assert len(gsm8k) == 3 and set(gsm8k[0]) == {"question", "answer"}
    first_lines = [json.loads(line) for line in open(SAMPLE_DATA / "gsm8k/test.jsonl", encoding="utf-8")][:3]
    assert [ex["question"] for ex in gsm8k] == [row["question"] for row in first_lines]
    assert all(ex["answer"].splitlines()[-1].startswith("#### ") for ex in gsm8k)

    boolq = load_task_examples("boolq", "train", SAMPLE_DATA)
    assert set(boolq[0]) == {"question", "passage", "answer"}
    assert {type(ex["answer"]) for ex in boolq} == {bool} and {ex["answer"] for ex in boolq} == {True, False}
    boolq[0]["question"] = "changed"
    assert load_task_examples("boolq", "train", SAMPLE_DATA)[0]["question"] != "changed"


# ---------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "task, lines, location, message",
    [
        ("gsm8k", ['{"question": "q", "answer": "a\\n#### 1"}', '{"question": "q", "answer": '], 2, "invalid JSON"),
        ("gsm8k", ['{"question": "q", "answer": "a\\n#### 1"}', "", '{"question": "q"}'], 3, "field 'answer' is missing"),
        ("gsm8k", ['{"question": "q", "answer": "no final line"}'], 1, "no '#### <number>' line"),
        ("boolq", ['{"question": "q", "passage": "p", "answer": "true"}'], 1, "field 'answer' is a str, expected a bool"),
        ("boolq", ['["q", "p", true]'], 1, "expected a JSON object"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, task, lines, location, message):
    name = "train.jsonl"
    write_jsonl(tmp_path / task / name, lines)
    with pytest.raises(DataError, match=message) as err:
        load_task_examples(task, "train", tmp_path)
    assert f"{tmp_path / task / name}:{location}:" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_malformed_squad_names_file_and_position(tmp_path):
    path = tmp_path / "squad" / "train-v2.0.json"
    path.parent.mkdir()
    path.write_text('{"version": "v2.0",\n "data": [\n  {"title": "x",}\n]}', encoding="utf-8")
    with pytest.raises(DataError, match=f"{path}:3: invalid JSON"):
        load_task_examples("squad", "train", tmp_path)

    qa = {"id": "a", "question": "q?", "answers": [{"text": "c", "answer_start": 0}], "is_impossible": False}
    broken = dict(qa, id="b")
    del broken["question"]
    doc = {"version": "v2.0", "data": [{"title": "x", "paragraphs": [{"context": "c", "qas": [qa, broken]}]}]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(DataError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[1\]: field 'question' is missing"):
        load_task_examples("squad", "train", tmp_path)


def test_malformed_c4_names_file_and_line(tmp_path, tokenizer):
    write_jsonl(tmp_path / "c4" / "c4-train.x.jsonl", [{"text": "a b c", "url": "u"}, {"url": "u"}])
    write_jsonl(tmp_path / "c4" / "c4-validation.x.jsonl", [{"text": "a b c"}])
    with pytest.raises(DataError, match=f"{tmp_path / 'c4' / 'c4-train.x.jsonl'}:2: field 'text' is missing"):
        get_loaders("c4", nsamples=1, seqlen=2, tokenizer=tokenizer, data_dir=tmp_path)


# ---------------------------------------------------------------- missing files, fallbacks, Hub


def test_resolve_data_dir(tmp_path, monkeypatch):
    assert resolve_data_dir(None) is None
    monkeypatch.setenv("WANDA_DATA_DIR", str(SAMPLE_DATA))
    assert resolve_data_dir(None) == SAMPLE_DATA
    assert resolve_data_dir(tmp_path) == tmp_path
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nowhere")


def test_env_data_dir_is_used(tokenizer, monkeypatch):
    monkeypatch.setenv("WANDA_DATA_DIR", str(SAMPLE_DATA))
    assert len(load_task_examples("gsm8k", "train")) == 25


def test_missing_wikitext2_train_falls_back_to_validation(tmp_path, tokenizer, caplog):
    shutil.copytree(SAMPLE_DATA / "wikitext2", tmp_path / "wikitext2")
    (tmp_path / "wikitext2" / "wiki.train.raw").unlink()
    with caplog.at_level(logging.WARNING):
        trainloader, _ = get_loaders("wikitext2", nsamples=2, seqlen=16, tokenizer=tokenizer, data_dir=tmp_path)
    assert "wiki.train.raw is missing; calibrating on the WikiText-2 validation split" in caplog.text
    valid = tokenizer(" ".join(wikitext_lines(tmp_path / "wikitext2/wiki.valid.raw"))).input_ids
    windows = {tuple(valid[i : i + 16]) for i in range(len(valid) - 16)}
    assert all(tuple(inp[0].tolist()) in windows for inp, _ in trainloader)


def test_missing_c4_validation_holds_out_the_end_of_the_train_sample(tmp_path, tokenizer, caplog):
    early = [f"alpha document {i} " + "alpha words here " * 20 for i in range(4)]
    late = [f"omega document {i} " + "omega words there " * 20 for i in range(4)]
    write_jsonl(tmp_path / "c4" / "c4-train.00000-of-01024.jsonl", [{"text": t} for t in early + late])
    assert c4_holdout(8) == 4
    with caplog.at_level(logging.WARNING):
        trainloader, testenc = get_loaders("c4", nsamples=6, seqlen=20, tokenizer=tokenizer, data_dir=tmp_path)
    assert "no C4 validation file" in caplog.text and "held out for evaluation" in caplog.text
    for inp, _ in trainloader:
        text = tokenizer.decode(inp[0])
        assert "omega" not in text and "alpha" in text
    expected = tokenizer(" ".join(late), return_tensors="pt").input_ids
    assert torch.equal(testenc.input_ids, expected[:, : 256 * 20])


def test_missing_boolq_train_uses_dev_with_warning(tmp_path, caplog):
    shutil.copytree(SAMPLE_DATA / "boolq", tmp_path / "boolq")
    (tmp_path / "boolq" / "train.jsonl").unlink()
    with caplog.at_level(logging.WARNING):
        examples = load_task_examples("boolq", "train", tmp_path)
    assert examples == load_task_examples("boolq", "eval", SAMPLE_DATA)
    assert "no boolq train split locally" in caplog.text and "overlaps the evaluation data" in caplog.text


def test_missing_local_dataset_names_layout(tmp_path, tokenizer):
    with pytest.raises(DataError, match=r"for gsm8k is missing under .*; expected gsm8k/\{train,test\}\.jsonl"):
        load_task_examples("gsm8k", "eval", tmp_path)
    shutil.copytree(SAMPLE_DATA / "squad", tmp_path / "squad")
    (tmp_path / "squad" / "dev-v2.0.json").unlink()
    with pytest.raises(DataError, match="dev-v2.0.json for squad is missing"):
        load_task_examples("squad", "eval", tmp_path)  # eval never falls back to train
    with pytest.raises(DataError, match=r"for wikitext2 is missing .* omit --data_dir to load wikitext from the Hub"):
        get_loaders("squad", nsamples=1, seqlen=8, tokenizer=tokenizer, data_dir=tmp_path)


def test_hub_unreachable_without_local_copy_is_one_clear_error(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    # the libraries read these once at import time: make sure no network and no cached copy is used
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    with pytest.raises(DataError) as err:
        load_task_examples("gsm8k", "train")
    message = str(err.value)
    assert "cannot load gsm8k (openai/gsm8k main, split train) from the Hugging Face Hub" in message
    assert "--data_dir" in message and "gsm8k/{train,test}.jsonl" in message
    assert "\n" not in message
    with pytest.raises(DataError, match=r"cannot load wikitext2 \(wikitext wikitext-2-raw-v1, split train\)"):
        get_loaders("wikitext2", nsamples=1, seqlen=8, tokenizer=tokenizer)


# ---------------------------------------------------------------- token caches


def test_corpus_tokenized_once_per_process_and_cached_on_disk(tokenizer, tmp_path, monkeypatch):
    counting = CountingTokenizer(tokenizer)
    first, _ = get_loaders("wikitext2", nsamples=3, seqlen=32, tokenizer=counting, data_dir=SAMPLE_DATA)
    assert counting.calls == 2  # train text and test text, once each
    assert len(list((tmp_path / "cache" / "tokenized").glob("text-*.pt"))) == 2

    again, _ = get_loaders("wikitext2", nsamples=3, seqlen=32, tokenizer=counting, data_dir=SAMPLE_DATA)
    assert counting.calls == 2  # in-process cache

    monkeypatch.setattr(token_cache, "TOKEN_CACHE", {})  # a new process
    fresh = CountingTokenizer(tokenizer)
    from_disk, testenc = get_loaders("wikitext2", nsamples=3, seqlen=32, tokenizer=fresh, data_dir=SAMPLE_DATA)
    assert fresh.calls == 0
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, from_disk))
    assert testenc.input_ids.dtype == torch.long


def test_a_failed_token_cache_write_leaves_no_file_and_costs_only_time(tokenizer, tmp_path, monkeypatch, caplog):
    def full_disk(obj, path):  # what torch.save does on a full disk: part of the file, then a RuntimeError
        Path(path).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(token_cache.torch, "save", full_disk)
    with caplog.at_level(logging.WARNING, logger="lib.data.token_cache"):
        tokens = get_eval_tokens("wikitext2", tokenizer, data_dir=SAMPLE_DATA, seqlen=32)
    assert tokens.shape[0] == 1 and tokens.shape[1] > 32
    assert "cannot write token cache" in caplog.text and "continuing without it" in caplog.text
    assert list((tmp_path / "cache" / "tokenized").iterdir()) == []  # neither an entry nor a temporary


def test_c4_documents_cached_on_disk(tokenizer, monkeypatch):
    counting = CountingTokenizer(tokenizer)
    first, _ = get_loaders("c4", nsamples=3, seqlen=64, tokenizer=counting, data_dir=SAMPLE_DATA)
    assert counting.calls > 0
    monkeypatch.setattr(token_cache, "TOKEN_CACHE", {})
    fresh = CountingTokenizer(tokenizer)
    second, _ = get_loaders("c4", nsamples=3, seqlen=64, tokenizer=fresh, data_dir=SAMPLE_DATA)
    assert fresh.calls == 0
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))


def test_task_examples_tokenized_once_per_process(tokenizer):
    counting = CountingTokenizer(tokenizer)
    get_loaders("gsm8k", nsamples=8, seqlen=512, tokenizer=counting, data_dir=SAMPLE_DATA)
    calls = counting.calls
    assert calls <= 2  # one batch for the 25 examples, one for the WikiText-2 test text
    get_loaders("gsm8k", nsamples=8, seed=1, seqlen=512, tokenizer=counting, data_dir=SAMPLE_DATA)
    assert counting.calls == calls


def test_cache_key_follows_the_file(tokenizer, tmp_path):
    shutil.copytree(SAMPLE_DATA / "wikitext2", tmp_path / "wikitext2")
    counting = CountingTokenizer(tokenizer)
    before = get_eval_tokens("wikitext2", counting, tmp_path)
    with open(tmp_path / "wikitext2" / "wiki.test.raw", "a", encoding="utf-8") as f:
        f.write(" = Appendix = \n \n A new closing line . \n")
    after = get_eval_tokens("wikitext2", counting, tmp_path)
    assert counting.calls == 2 and after.shape[1] > before.shape[1]


def test_hub_sources_use_the_documented_ids(tokenizer, monkeypatch):
    """No network: `datasets.load_dataset` answers with small in-memory datasets in the Hub schemas."""
    import datasets

    squad = load_task_examples("squad", "train", SAMPLE_DATA)
    rows = {
        ("wikitext", "wikitext-2-raw-v1"): {"text": wikitext_lines(SAMPLE_DATA / "wikitext2/wiki.test.raw")},
        ("rajpurkar/squad_v2", None): {
            "id": [ex["id"] for ex in squad], "title": [ex["title"] for ex in squad],
            "context": [ex["context"] for ex in squad], "question": [ex["question"] for ex in squad],
            "answers": [{"text": ex["answers"], "answer_start": [0] * len(ex["answers"])} for ex in squad],
        },
        ("openai/gsm8k", "main"): {"question": ["Q?"] * 3, "answer": ["1 + 1 = 2\n#### 2"] * 3},
        ("google/boolq", None): {"question": ["is it"] * 2, "answer": [True, False], "passage": ["p"] * 2},
        ("allenai/c4", None): {"text": ["c4 web text " * 150] * 5, "url": ["u"] * 5, "timestamp": ["t"] * 5},
    }
    calls = []

    def fake_load_dataset(path, name=None, split=None, data_files=None, **kwargs):
        calls.append((path, name, split, data_files))
        return datasets.Dataset.from_dict(rows[path, name])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_task_examples("squad", "eval") == squad
    assert load_task_examples("gsm8k", "eval", limit=2) == [{"question": "Q?", "answer": "1 + 1 = 2\n#### 2"}] * 2
    assert load_task_examples("boolq", "eval")[1] == {"question": "is it", "passage": "p", "answer": False}
    loader, testenc = get_loaders("wikitext2+c4", nsamples=4, seqlen=16, tokenizer=tokenizer)
    assert len(loader) == 4 and all(inp.shape == (1, 16) for inp, _ in loader)
    assert get_eval_tokens("c4", tokenizer, seqlen=8).shape == (1, 256 * 8)
    assert ("rajpurkar/squad_v2", None, "validation", None) in calls
    assert ("openai/gsm8k", "main", "test", None) in calls and ("google/boolq", None, "validation", None) in calls
    assert ("wikitext", "wikitext-2-raw-v1", "train", None) in calls
    assert ("wikitext", "wikitext-2-raw-v1", "test", None) in calls
    assert ("allenai/c4", None, "train", {"train": "en/c4-train.00000-of-01024.json.gz"}) in calls
    assert ("allenai/c4", None, "validation", {"validation": "en/c4-validation.00000-of-00008.json.gz"}) in calls
