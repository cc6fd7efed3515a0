"""The built-in datasets, registered in this order when `lib.data` is imported: WikiText-2 and C4 (text),
SQuAD v2, GSM8K and BoolQ (examples). Their readers are `lib.data.sources`', their prompts
`lib.data.prompts`'; the example tasks name their evaluator in `lib.eval` (`evaluate`), which binds it.
"""

from __future__ import annotations

from pathlib import Path

from lib.data.prompts import (boolq_prompt, gsm8k_calibration_text, gsm8k_prompt, gsm8k_target, squad_prompt,
                              squad_target)
from lib.data.registry import DataError, DatasetSpec, Metric, register, require_field
from lib.data.sources import Corpus, c4_documents, read_squad_json, wikitext2_lines


def _wikitext2_corpus(role: str, data_dir: Path | None) -> Corpus:
    return wikitext2_lines("train" if role == "calibration" else "test", data_dir)


def _gsm8k_record(record: dict, where: str) -> dict:
    answer = require_field(record, "answer", str, where)
    if "####" not in answer:
        raise DataError(f"{where}: field 'answer' has no '#### <number>' line (official GSM8K schema)")
    return {"question": require_field(record, "question", str, where), "answer": answer}


def _boolq_record(record: dict, where: str) -> dict:
    return {
        "question": require_field(record, "question", str, where),
        "passage": require_field(record, "passage", str, where),
        "answer": require_field(record, "answer", bool, where),
    }


register(DatasetSpec(
    "wikitext2", "WikiText2", "text", "wikitext2/wiki.{train,valid,test}.raw", ("wikitext", "wikitext-2-raw-v1"),
    corpus=_wikitext2_corpus, sampling="windows", eval_separator="\n\n",
))
register(DatasetSpec(
    "c4", "C4", "text", "c4/*.json[l][.gz] with 'train' or 'validation' in the file name", ("allenai/c4", None),
    corpus=c4_documents, sampling="documents", eval_separator=" ", eval_windows=256,  # Wanda: 256 x seqlen tokens
))
register(DatasetSpec(
    "squad", "SQuAD", "examples", "squad/{train,dev}-v2.0.json", ("rajpurkar/squad_v2", None),
    files={"train": ("train-v2.0.json", "train"), "eval": ("dev-v2.0.json", "validation")},
    read_file=read_squad_json,
    from_hub=lambda r: {"id": r["id"], "title": r["title"], "context": r["context"], "question": r["question"],
                        "answers": list(r["answers"]["text"])},
    calibration_text=lambda ex: squad_prompt(ex["context"], ex["question"]),
    prompt=lambda ex: squad_prompt(ex["context"], ex["question"]), target=lambda ex: squad_target(ex["answers"]),
    evaluate="evaluate_squad", answer_nll=True, max_new_tokens=32,
    metrics=(Metric("exact", "SQuAD EM"), Metric("f1", "SQuAD F1"), Metric("answer_nll", "SQuAD NLL ↓", "nll")),
    behaviour=(Metric("HasAns_f1", "SQuAD F1 answerable"), Metric("NoAns_exact", "SQuAD EM unanswerable"),
               Metric("no_answer_rate", "SQuAD no-answer rate"),
               Metric("HasAns_answer_nll", "SQuAD NLL answerable ↓", "nll"),
               Metric("NoAns_answer_nll", "SQuAD NLL unanswerable ↓", "nll")),
))
register(DatasetSpec(
    "gsm8k", "GSM8K", "examples", "gsm8k/{train,test}.jsonl", ("openai/gsm8k", "main"),
    files={"train": ("train.jsonl", "train"), "eval": ("test.jsonl", "test")},
    parse_record=_gsm8k_record, from_hub=lambda r: {"question": r["question"], "answer": r["answer"]},
    calibration_text=lambda ex: gsm8k_calibration_text(ex["question"], ex["answer"]),
    prompt=lambda ex: gsm8k_prompt(ex["question"]), target=lambda ex: gsm8k_target(ex["answer"]),
    evaluate="evaluate_gsm8k", answer_nll=True, max_new_tokens=256, fewshot=True,
    metrics=(Metric("strict_accuracy", "GSM8K acc (strict)"), Metric("flexible_accuracy", "GSM8K acc (flex)"),
             Metric("answer_nll", "GSM8K NLL ↓", "nll")),
))
register(DatasetSpec(
    "boolq", "BoolQ", "examples", "boolq/{train,dev}.jsonl", ("google/boolq", None),
    files={"train": ("train.jsonl", "train"), "eval": ("dev.jsonl", "validation")},
    parse_record=_boolq_record,
    from_hub=lambda r: {"question": r["question"], "passage": r["passage"], "answer": bool(r["answer"])},
    calibration_text=lambda ex: boolq_prompt(ex["passage"], ex["question"]),
    evaluate="evaluate_boolq", metrics=(Metric("accuracy", "BoolQ acc"),),
    behaviour=(Metric("yes_rate", "BoolQ yes rate"),),
))
