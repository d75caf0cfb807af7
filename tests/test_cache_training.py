"""Training with the cache on, and what the cache holds after a prefill.

* A forward with a fresh cache followed by ``backward()`` works (no in-place modification of a
  tensor saved for backward), gives the gradients of a forward without the cache, and leaves no
  autograd graph in the cache, so a second chunk can be trained from it (truncated BPTT).
* After a prefill, ``conv_state`` holds the last ``d_conv`` pre-convolution inputs, left-padded
  with zeros when the prompt is shorter: exact equality.

Guards of issue 9; each section ends with a test that injects the bug and shows the guard firing.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import minimamba_core as mm

mixer_mod = importlib.import_module("minimamba_core.mixer")

VOCAB = 50


def _model(seed: int = 0, dtype=torch.float32, d_conv: int = 4) -> mm.MambaLM:
    torch.manual_seed(seed)
    cfg = mm.MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=8, d_conv=d_conv)
    return mm.MambaLM(cfg).to(dtype)


def _batch(b: int, l: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (b, l), generator=g), torch.randint(0, VOCAB, (b, l), generator=g)


def _loss(model, ids, targets, cache=None):
    logits = model(ids, cache=cache)[..., :VOCAB]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _grads(model):
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def _check_cache_gradients(model, ids, targets) -> None:
    """The guard: a forward with a fresh cache trains exactly like one without."""
    cache = _train_step_with_fresh_cache(model, ids, targets)
    with_cache = _grads(model)
    model.zero_grad(set_to_none=True)
    _loss(model, ids, targets).backward()
    # same graph up to adding a zero initial state: equal to rounding (measured: bit-for-bit)
    for (name, _), g_cache, g in zip(model.named_parameters(), with_cache, _grads(model)):
        torch.testing.assert_close(g_cache, g, atol=1e-7, rtol=1e-6,
                                   msg=lambda m, name=name: f"gradient of {name} differs with the cache: {m}")
    _assert_no_graph(cache)
    assert cache.seqlen_offset == ids.shape[1]


def _train_step_with_fresh_cache(model, ids, targets):
    """forward with a fresh cache + backward; returns the cache afterwards."""
    model.zero_grad(set_to_none=True)
    cache = model.empty_cache(ids.shape[0])
    _loss(model, ids, targets, cache).backward()
    return cache


def _assert_no_graph(cache) -> None:
    for t in cache.conv_states + cache.ssm_states:
        assert not t.requires_grad and t.grad_fn is None, "the cache holds an autograd graph"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_backward_through_a_fresh_cache_matches_no_cache(dtype):
    """No in-place modification error (the mixer rebinds the cache's states, never writes into
    a tensor the scan may have saved for backward), the gradients of a cache-free forward."""
    _check_cache_gradients(_model(dtype=dtype), *_batch(2, 12))


def test_second_chunk_trains_from_the_detached_cache():
    """Truncated backprop through time: chunk 2 starts from chunk 1's (detached) states."""
    model = _model()
    ids, targets = _batch(2, 16)
    cache = _train_step_with_fresh_cache(model, ids[:, :8], targets[:, :8])
    model.zero_grad(set_to_none=True)
    _loss(model, ids[:, 8:], targets[:, 8:], cache).backward()  # must not reach chunk 1's graph
    _assert_no_graph(cache)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # The chunked forward computes the same logits as the whole sequence.
    with torch.no_grad():
        cache = model.empty_cache(2)
        chunked = torch.cat([model(ids[:, :8], cache=cache), model(ids[:, 8:], cache=cache)], dim=1)
        torch.testing.assert_close(chunked, model(ids), atol=1e-5, rtol=0)


def test_cache_training_guard_fires_when_the_cached_path_cuts_the_graph(monkeypatch):
    """The bug: treating "a cache is given" as "inference", running the mixer without grad."""
    original = mixer_mod.MambaMixer.forward

    def no_grad_with_cache(self, hidden, cache=None, attention_mask=None):
        with torch.set_grad_enabled(cache is None and torch.is_grad_enabled()):
            return original(self, hidden, cache, attention_mask)
    monkeypatch.setattr(mixer_mod.MambaMixer, "forward", no_grad_with_cache)
    with pytest.raises(AssertionError, match="differs with the cache"):
        _check_cache_gradients(_model(), *_batch(2, 12))


def test_in_place_state_update_would_break_backward_of_the_sequential_scan():
    """Why the mixer rebinds its states: the loop's autograd saves ``h0``; writing the new state
    into it, as a cache that updates in place would, breaks the backward pass."""
    g = torch.Generator().manual_seed(0)
    x, delta, z = (torch.randn(1, 6, 3, generator=g, requires_grad=True) for _ in range(3))
    B, C = (torch.randn(1, 6, 2, generator=g) for _ in range(2))
    A = -torch.rand(3, 2, generator=g)
    h0 = torch.zeros(1, 3, 2)
    y, h = mm.selective_scan_sequential(x, delta, A, B, C, z=z, delta_softplus=True, h0=h0,
                                        return_last_state=True)
    h0.copy_(h.detach())  # the in-place update
    with pytest.raises(RuntimeError, match="inplace"):
        y.sum().backward()


def test_cache_graph_guard_fires_when_states_keep_their_graph(monkeypatch):
    """The bug: storing the state without ``detach()``."""
    original = mixer_mod.MambaMixer.forward

    def keeps_graph(self, hidden, cache=None, attention_mask=None):
        out = original(self, hidden, cache, attention_mask)
        if cache is not None:  # re-attach the state to this forward's graph
            state = cache.layers[self.layer_idx]
            state["ssm_state"] = state["ssm_state"] + 0 * out.sum()
        return out
    monkeypatch.setattr(mixer_mod.MambaMixer, "forward", keeps_graph)
    cache = _train_step_with_fresh_cache(_model(), *_batch(2, 12))
    with pytest.raises(AssertionError, match="autograd graph"):
        _assert_no_graph(cache)


# ----------------------------------------------------------------------------------------------
# conv_state after a prefill
# ----------------------------------------------------------------------------------------------

def _pre_conv_inputs(model, ids):
    """Each layer's pre-convolution input ``x`` (the first half of ``in_proj``), ``(b, l, d_inner)``."""
    seen = {}

    def record(i):
        def hook(module, args, out):  # returns None: the output is left as it is
            seen[i] = out.chunk(2, dim=-1)[0].detach()
        return hook
    hooks = [layer.mixer.in_proj.register_forward_hook(record(i))
             for i, layer in enumerate(model.backbone.layers)]
    try:
        cache = model.empty_cache(ids.shape[0])
        with torch.no_grad():
            model(ids, cache=cache)
    finally:
        for h in hooks:
            h.remove()
    return seen, cache


def _check_conv_state(model, l: int) -> None:
    k = model.config.d_conv
    ids, _ = _batch(2, l, seed=l)
    x, cache = _pre_conv_inputs(model, ids)
    for i, conv_state in enumerate(cache.conv_states):
        last = x[i].transpose(1, 2)[:, :, -k:].float()  # (b, d_inner, min(l, k))
        expected = torch.nn.functional.pad(last, (k - last.shape[2], 0))  # zeros on the left
        assert conv_state.dtype == torch.float32
        assert torch.equal(conv_state, expected), f"layer {i}: conv_state is not the last {k} inputs (l={l})"


@pytest.mark.parametrize("l", [1, 2, 3, 4, 5, 11])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_conv_state_after_prefill_is_last_inputs_left_padded(l, dtype):
    _check_conv_state(_model(dtype=dtype), l)


def test_conv_state_after_prefill_and_steps():
    """Prefill then steps: conv_state is the last d_conv inputs of the whole stream."""
    model = _model(d_conv=3)
    ids, _ = _batch(1, 6, seed=7)
    x_all, _ = _pre_conv_inputs(model, ids)  # inputs of the whole sequence, run at once
    cache = model.empty_cache(1)
    with torch.no_grad():
        model(ids[:, :2], cache=cache)
        for t in range(2, 6):
            model.step(ids[:, t:t + 1], cache)
    for i, conv_state in enumerate(cache.conv_states):
        torch.testing.assert_close(conv_state, x_all[i].transpose(1, 2)[:, :, -3:], atol=1e-6, rtol=0)


def test_conv_state_guard_fires_on_an_off_by_one_window(monkeypatch):
    original = mixer_mod.MambaMixer.forward

    def off_by_one(self, hidden, cache=None, attention_mask=None):
        out = original(self, hidden, cache, attention_mask)
        if cache is not None:  # the bug: the window one step too old
            state = cache.layers[self.layer_idx]
            state["conv_state"] = torch.roll(state["conv_state"], 1, dims=-1)
        return out
    monkeypatch.setattr(mixer_mod.MambaMixer, "forward", off_by_one)
    with pytest.raises(AssertionError, match="conv_state is not the last"):
        _check_conv_state(_model(), 5)
