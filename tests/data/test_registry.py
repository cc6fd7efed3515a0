"""The dataset registry (lib/data/registry.py): a spec must declare what its kind needs."""

import pytest

from lib.data import registry


def test_a_spec_missing_what_its_kind_needs_is_refused():
    with pytest.raises(ValueError, match="needs corpus"):
        registry.DatasetSpec("bad", "Bad", "text", "-", ("x", None))
    with pytest.raises(ValueError, match="needs files"):
        registry.DatasetSpec("bad", "Bad", "examples", "-", ("x", None), calibration_text=str)


def test_an_evaluation_field_without_evaluate_is_refused():
    with pytest.raises(ValueError, match="describe its evaluate"):
        registry.DatasetSpec("bad", "Bad", "examples", "-", ("x", None), files={"train": ("a", "b"), "eval": ("c", "d")},
                                  parse_record=dict, calibration_text=str, answer_nll=True)
