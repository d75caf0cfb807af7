"""The fast scan's settings (``minimamba_core/fast_scan/settings.py``): one public ``settings``
object, changed for a block of code with ``fast_scan.using(...)``, which restores the old values
on exit and on an error, takes dict settings in part, and refuses an unknown name or a value out
of range by name (changing nothing). Every number changes speed, never the result."""

import dataclasses

import pytest
import torch
from fast_scan_helpers import fast, outputs_and_grads, scan_inputs

import minimamba_core as mm
from minimamba_core import fast_scan


def _snapshot():
    return dataclasses.asdict(fast_scan.settings)


def test_defaults():
    s = fast_scan.settings
    assert fast_scan.SCHEDULES == ("chained", "summarized") and s.schedule is None
    assert s.chunk == {"chained": 64, "summarized": 32}
    assert s.chunk_steps("summarized", torch.device("cpu"), compiled=False) == 32
    assert s.chunk_steps("summarized", torch.device("cpu"), compiled=True) == s.chunk_compiled_cpu["summarized"]
    assert s.chunk_steps("summarized", torch.device("meta"), compiled=True) == s.chunk_compiled_gpu["summarized"] == 16
    assert s.block_elements(torch.device("cpu")) == 2 ** 21 and s.block_elements(torch.device("meta")) == 2 ** 27
    assert s.prime_allocator and s.prime_elements * 4 == 28 * 2 ** 20


def test_using_restores_on_exit_and_on_an_error():
    before = _snapshot()
    with fast_scan.using(schedule="chained", block_elements_cpu=1024) as s:
        assert s is fast_scan.settings  # the one object, changed in place
        assert (s.schedule, s.block_elements_cpu) == ("chained", 1024)
    assert _snapshot() == before
    with pytest.raises(RuntimeError, match="inside"):
        with fast_scan.using(prime_allocator=False, min_block_channels_cpu=4):
            assert not fast_scan.settings.prime_allocator
            raise RuntimeError("inside")
    assert _snapshot() == before
    with fast_scan.using(chunk={"chained": 8}):
        with fast_scan.using(chunk={"chained": 4}, schedule="summarized"):  # nested
            assert fast_scan.settings.chunk == {"chained": 4, "summarized": 32}
        assert fast_scan.settings.chunk == {"chained": 8, "summarized": 32} and fast_scan.settings.schedule is None
    assert _snapshot() == before


def test_dict_settings_may_be_given_in_part():
    before = _snapshot()
    with fast_scan.using(chunk={"chained": 8}, chunk_compiled_gpu={"summarized": 32}):
        assert fast_scan.settings.chunk == {"chained": 8, "summarized": before["chunk"]["summarized"]}
        assert fast_scan.settings.chunk_compiled_gpu == {"chained": before["chunk_compiled_gpu"]["chained"],
                                                         "summarized": 32}
    assert _snapshot() == before


@pytest.mark.parametrize("changes, words", [
    (dict(chunks={"chained": 8}), ["unknown fast_scan setting", "'chunks'", "'chunk'"]),
    (dict(schedule="parallel"), ["schedule", "('chained', 'summarized')", "'parallel'"]),
    (dict(schedule="sequential"), ["schedule", "'sequential'"]),
    (dict(chunk={"chained": 0}), ["chunk", "positive int", "0"]),
    (dict(chunk={"summarized": 1}), ["chunk", "at least 2 for 'summarized'", "1"]),  # its recursion never ends
    (dict(chunk={"parallel": 4}), ["chunk", "('chained', 'summarized')", "'parallel'"]),
    (dict(chunk_compiled_cpu={"summarized": 2.5}), ["chunk_compiled_cpu", "2.5"]),
    (dict(chunk_compiled_gpu={"summarized": True}), ["chunk_compiled_gpu", "True"]),
    (dict(block_elements_gpu=0), ["block_elements_gpu", "positive int", "0"]),
    (dict(block_elements_cpu=-1), ["block_elements_cpu", "-1"]),
    (dict(min_block_channels_cpu=1.5), ["min_block_channels_cpu", "1.5"]),
    (dict(prime_elements=True), ["prime_elements", "True"]),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_unknown_settings_and_values_out_of_range_are_refused_by_name(changes, words):
    before = _snapshot()
    with pytest.raises(ValueError) as info:
        with fast_scan.using(prime_allocator=False, **changes):  # a valid change beside: not applied either
            pass
    assert all(w in str(info.value) for w in words), (words, str(info.value))
    assert _snapshot() == before


@pytest.mark.parametrize("schedule", fast_scan.SCHEDULES)
def test_a_changed_chunk_size_gives_the_same_scan(schedule):
    inp = scan_inputs(2, 37, 5, 4)
    ref = outputs_and_grads(fast(schedule), inp)
    for chunk in ((1,) if schedule == "chained" else ()) + (2, 3, 8, 100):
        with fast_scan.using(chunk={schedule: chunk}):
            got = outputs_and_grads(fast(schedule), inp)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_the_schedule_setting_reaches_the_parallel_scan(monkeypatch):
    """``using(schedule=...)`` decides which schedule ``selective_scan_parallel`` runs; both give
    its numbers, as do tiny d_inner blocks."""
    ran = []
    real = fast_scan.chunked_scan

    def spy(*args, schedule=None):
        ran.append(schedule or fast_scan.settings.schedule or "summarized")
        return real(*args, schedule=schedule)
    monkeypatch.setattr(fast_scan, "chunked_scan", spy)
    inp = {k: v.detach() for k, v in scan_inputs(2, 50, 6, 4).items()}
    args = (inp["x"], inp["delta"], inp["A"], inp["B"], inp["C"])
    ref = mm.selective_scan_sequential(*args, h0=inp["h0"])
    outs = [mm.selective_scan_parallel(*args, h0=inp["h0"])]
    with fast_scan.using(schedule="chained", chunk={"chained": 7}):
        outs.append(mm.selective_scan_parallel(*args, h0=inp["h0"]))
    with fast_scan.using(block_elements_cpu=2 * 64 * 4 * 2, min_block_channels_cpu=1):  # 2 channels a block
        assert len(fast_scan.d_blocks(torch.zeros(2, 64, 6), 4)) == 3
        outs.append(mm.selective_scan_parallel(*args, h0=inp["h0"]))
    assert ran == ["summarized", "chained", "summarized"]
    for y in outs:
        torch.testing.assert_close(y, ref, atol=1e-10, rtol=1e-10)


def test_priming_is_once_per_process_and_can_be_switched_off(monkeypatch):
    sizes, real_empty = [], torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: sizes.append(real_empty(*a, **k).nbytes) or real_empty(0))
    fast_scan.forget_priming()
    with fast_scan.using(prime_allocator=False):
        assert fast_scan.prime_allocator() is False  # off: nothing allocated, nothing remembered
    with fast_scan.using(prime_elements=1024):
        assert fast_scan.prime_allocator() is True and fast_scan.prime_allocator() is False
    fast_scan.forget_priming()
    assert fast_scan.prime_allocator() is True
    assert sizes == [1024 * 4, 28 * 2 ** 20]


# ---- settings changed by hand are checked too (a review found them unchecked outside using()) ---

@pytest.mark.parametrize("table, value, words", [
    ("chunk", {"chained": 64, "summarized": 1}, ["chunk", "at least 2"]),     # used to recurse forever
    ("chunk", {"chained": 0, "summarized": 32}, ["chunk", "positive int"]),   # used to divide by zero
])
def test_a_setting_changed_by_hand_is_refused_at_the_next_scan(monkeypatch, table, value, words):
    monkeypatch.setattr(fast_scan.settings, table, value)
    x = torch.randn(1, 5, 3)
    with pytest.raises(ValueError) as err:
        mm.selective_scan_parallel(x, x, -torch.ones(3, 2), torch.randn(1, 5, 2), torch.randn(1, 5, 2))
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("changes, words", [
    (dict(chunk=16), ["chunk", "must map each of"]),
    (dict(prime_allocator="no"), ["prime_allocator", "bool"]),
])
def test_using_refuses_values_of_the_wrong_type_by_name(changes, words):
    before = dataclasses.asdict(fast_scan.settings)
    with pytest.raises(ValueError) as err:
        with fast_scan.using(**changes):
            pass
    assert all(w in str(err.value) for w in words), str(err.value)
    assert dataclasses.asdict(fast_scan.settings) == before
