"""The dataset registry (lib/data/registry.py): a spec must declare what its kind needs; only datasets with a
calibration text are calibration sources."""

import pytest

from lib.data import dataset_names, parse_mixture, registry


def test_a_spec_missing_what_its_kind_needs_is_refused():
    with pytest.raises(ValueError, match="needs corpus"):
        registry.DatasetSpec("bad", "Bad", "text", "-", ("x", None))
    with pytest.raises(ValueError, match="needs files for eval"):
        registry.DatasetSpec("bad", "Bad", "examples", "-", ("x", None), calibration_text=str)


def test_calibration_text_and_a_prompt_need_a_train_file():
    with pytest.raises(ValueError, match="calibration_text and prompt need files for train"):
        registry.DatasetSpec("bad", "Bad", "examples", "-", ("x", None), files={"eval": ("c", "d")},
                             parse_record=dict, calibration_text=str)
    eval_only = registry.DatasetSpec("ok", "Ok", "examples", "-", ("x", None), files={"eval": ("c", "d")},
                                     parse_record=dict)
    assert not eval_only.calibration_source and not eval_only.finetunable


def test_the_calibration_names_are_the_datasets_with_calibration_text():
    assert dataset_names() == ("wikitext2", "c4", "squad", "gsm8k", "boolq", "mixed")
    assert registry.names("examples") == ("squad", "gsm8k", "boolq", "rte", "hellaswag", "winogrande", "arc_easy",
                                          "arc_challenge", "openbookqa", "piqa")
    with pytest.raises(ValueError, match="unknown calibration dataset 'rte'"):
        parse_mixture("wikitext2+rte")
