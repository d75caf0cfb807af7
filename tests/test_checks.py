"""The guards of the public entry points (``minimamba_core/checks.py``), called directly.

Each entry point's own test file checks that its door calls them (``test_scan.py``,
``test_model.py``, ``test_cache.py``, ``test_generate.py``, ``test_padding.py``); here each guard
is checked once on its own: it raises ``TypeError`` or ``ValueError`` naming the argument, what was
expected and what was given, and lets good input through.
"""

import pytest
import torch
from helpers import BAD_CONTROLS, BAD_IDS, expect_error

from minimamba_core import checks

GOOD_CONTROLS = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0)


@pytest.mark.parametrize("case, make, error, words", BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_check_input_ids(case, make, error, words):
    expect_error(lambda: checks.check_input_ids(make(), 50), error, *words)


def test_check_input_ids_lets_long_and_int32_ids_through_and_names_its_argument():
    for dtype in (torch.long, torch.int32):
        checks.check_input_ids(torch.tensor([[0, 49]], dtype=dtype), 50)
    expect_error(lambda: checks.check_input_ids(torch.zeros(2, 1), 50, "input_ids_t"), TypeError,
                 "input_ids_t must hold integer token ids", "input_ids.long()")


@pytest.mark.parametrize("name, value, words", BAD_CONTROLS, ids=[f"{c[0]}={c[1]}" for c in BAD_CONTROLS])
def test_check_sampling(name, value, words):
    checks.check_sampling(**GOOD_CONTROLS)
    expect_error(lambda: checks.check_sampling(**{**GOOD_CONTROLS, name: value}), ValueError, *words)


@pytest.mark.parametrize("value", [0, -1, 2.0, True, "2", None])
def test_positive_ints_refuse_bools_floats_and_zero(value):
    expect_error(lambda: checks.check_batch_size(value), ValueError, "batch_size must be a positive int", repr(value))
    expect_error(lambda: checks.check_positive_int("steps", value), ValueError, "steps", repr(value))
    checks.check_batch_size(3)


def test_states_are_float32_or_float64():
    for dtype in (torch.float32, torch.float64):
        checks.check_state_dtype(dtype)
    for dtype in (torch.bfloat16, torch.float16, torch.int64):
        expect_error(lambda: checks.check_state_dtype(dtype), ValueError, "float32 or torch.float64", str(dtype))


def test_check_attention_mask_returns_the_mask_as_bool():
    ids = torch.zeros(2, 3, dtype=torch.long)
    keep = checks.check_attention_mask(torch.tensor([[0, 1, 1], [1, 1, 1]]), ids)
    assert keep.dtype == torch.bool and keep.tolist() == [[False, True, True], [True, True, True]]
    expect_error(lambda: checks.check_attention_mask(torch.tensor([[1, 0, 1], [1, 1, 1]]), ids), ValueError,
                 "left padding", "row 0", "position 0")


def test_scan_output_dtype_is_the_dtype_of_x():
    assert checks.scan_output_dtype(torch.zeros(1, 2, 3, dtype=torch.bfloat16)) == torch.bfloat16
    expect_error(lambda: checks.scan_output_dtype([1.0]), TypeError, "x", "torch.Tensor", "list")
    expect_error(lambda: checks.scan_output_dtype(torch.zeros(1, 2, 3, dtype=torch.long)), TypeError,
                 "x", "floating-point", "torch.int64")
