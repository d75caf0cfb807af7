"""MambaLM (``minimamba_core/model.py``): structure, cached inference equal to the full forward,
parameter count, bad input, and the layer protocol: the mixer registry (a toy mixer with its own
states runs through the one LM, cache and ``generate``), the gated MLP of ``d_intermediate > 0``,
and configs saved before the protocol existed."""

import importlib

import pytest
import torch
from helpers import BAD_IDS, SMALL_VOCAB, expect_error, small_config, small_ids, tiny_lm
from torch import nn

import minimamba_core as mm
from minimamba_core.model import MIXERS, GatedMLP, register_mixer

model_mod = importlib.import_module("minimamba_core.model")


def _model(dtype=torch.float32, seed=0, device="cpu", **overrides):
    torch.manual_seed(seed)  # weights drawn on the CPU, then moved: the same model on every device
    cfg = dict(d_model=32, n_layer=2, vocab_size=45, d_state=8)
    cfg.update(overrides)
    return mm.MambaLM(mm.MambaConfig(**cfg)).to(device, dtype).eval()


def _ids(b, l, vocab=45, seed=1, device="cpu"):
    return torch.randint(0, vocab, (b, l), generator=torch.Generator().manual_seed(seed)).to(device)


def _prefill_then_step(model, ids, k):
    cache = model.empty_cache(ids.shape[0])
    outs = [model(ids[:, :k], cache=cache)] if k > 0 else []
    for t in range(k, ids.shape[1]):
        outs.append(model.step(ids[:, t:t + 1], cache))
    assert cache.seqlen_offset == ids.shape[1]
    return torch.cat(outs, dim=1)


def test_module_names_follow_the_official_checkpoint():
    names = set(_model().state_dict())
    for key in ["backbone.embedding.weight", "backbone.layers.1.norm.weight", "backbone.norm_f.weight",
                "lm_head.weight", "backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.D",
                "backbone.layers.0.mixer.in_proj.weight", "backbone.layers.0.mixer.conv1d.weight",
                "backbone.layers.0.mixer.conv1d.bias", "backbone.layers.0.mixer.x_proj.weight",
                "backbone.layers.0.mixer.dt_proj.weight", "backbone.layers.0.mixer.dt_proj.bias",
                "backbone.layers.0.mixer.out_proj.weight"]:
        assert key in names


def test_tied_head_and_embedding_are_one_tensor():
    model = _model()
    assert model.lm_head.weight is model.backbone.embedding.weight
    untied = _model(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.backbone.embedding.weight
    assert untied.num_parameters() == model.num_parameters() + 48 * 32  # one more (48, 32) matrix


def test_logits_shape_includes_padded_rows():
    model = _model()
    logits = model(_ids(3, 5))
    assert logits.shape == (3, 5, 48)  # vocab 45 padded to a multiple of 8
    assert model(_ids(3, 5), num_last_tokens=2).shape == (3, 2, 48)


@pytest.mark.parametrize("k", range(0, 13))
def test_prefill_then_step_equals_full_forward_every_split_of_12(k, device):
    if device.type == "mps":
        pytest.skip("MPS has no float64")
    model = _model(dtype=torch.float64, device=device)  # d_conv = 4: k = 1, 2, 3 are shorter prompts
    ids = _ids(2, 12, device=device)
    torch.testing.assert_close(_prefill_then_step(model, ids, k), model(ids), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("k", [0, 100, 257, 299])
def test_prefill_then_step_equals_full_forward_length_300(k, device):
    model = _model(device=device)
    ids = _ids(1, 300, device=device)
    # fp32: the prefill uses the parallel scan and the steps the sequential one; both accumulate
    # in fp32 with different rounding orders, measured max abs difference ~1e-6 on logits O(1).
    torch.testing.assert_close(_prefill_then_step(model, ids, k), model(ids), atol=2e-5, rtol=2e-5)


def test_forward_with_cache_continues_a_sequence():
    model = _model(dtype=torch.float64)
    ids = _ids(2, 20)
    cache = model.empty_cache(2)
    parts = [model(ids[:, :7], cache=cache), model(ids[:, 7:9], cache=cache), model(ids[:, 9:], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, 1), model(ids), atol=1e-12, rtol=1e-12)


def _mixer_inputs(model, ids):
    """The input of every layer's mixer, captured with hooks."""
    captured = []
    hooks = [layer.mixer.register_forward_hook(lambda m, args, out: captured.append(args[0]))
             for layer in model.backbone.layers]
    model(ids)
    for h in hooks:
        h.remove()
    return captured


def test_cached_ssm_state_after_prefill_equals_float64_reference(device):
    model = _model(device=device)
    cache = model.empty_cache(2)
    model(_ids(2, 50, device=device), cache=cache)
    model, ids = model.cpu(), _ids(2, 50)
    ref = _model().double()
    ref.load_state_dict(model.state_dict())
    for layer, hidden in zip(ref.backbone.layers, _mixer_inputs(ref, ids)):
        mixer = layer.mixer
        x, z = mixer.in_proj(hidden).chunk(2, dim=-1)
        x = torch.nn.functional.silu(mixer.conv1d(x.transpose(1, 2))[..., :50].transpose(1, 2))
        delta, B, C = mixer.ssm_inputs(x)
        _, h = mm.selective_scan_sequential(x, delta, -torch.exp(mixer.A_log), B, C, D=mixer.D, z=z,
                                            delta_bias=mixer.dt_proj.bias, delta_softplus=True,
                                            return_last_state=True)
        got = cache.ssm_states[layer.mixer.layer_idx].cpu()
        assert got.dtype == torch.float32 and h.abs().max() > 1e-3
        torch.testing.assert_close(got.double(), h, atol=1e-5, rtol=1e-5)


def test_step_leaves_every_parameter_untouched():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cache = model.empty_cache(2)
    model(_ids(2, 5), cache=cache)
    model.step(_ids(2, 1), cache)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_parameter_count_equals_transformers_for_130m():
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        ours = mm.MambaLM(mm.MambaConfig(d_model=768, n_layer=24, vocab_size=50277))
        hf = transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2,
            conv_kernel=4, tie_word_embeddings=True))
    assert ours.config.padded_vocab_size == 50280
    assert ours.num_parameters() == hf.num_parameters()
    assert ours.num_parameters() == 129_135_360  # the count transformers reports for mamba-130m-hf


def test_float64_model_keeps_float64_everywhere():
    model = _model(dtype=torch.float64)
    cache = model.empty_cache(1)
    assert model(_ids(1, 4), cache=cache).dtype == torch.float64
    assert cache.ssm_states[0].dtype == torch.float64


# ---- bad input: one test each -------------------------------------------------------------


def test_token_id_out_of_range():
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=45\), got values in \[0, 45\]"):
        _model()(torch.tensor([[0, 45]]))


def test_negative_token_id():
    with pytest.raises(ValueError, match=r"got values in \[-1, 3\]"):
        _model()(torch.tensor([[-1, 3]]))


def test_float_token_ids():
    with pytest.raises(TypeError, match="integer token ids"):
        _model()(torch.tensor([[1.0, 2.0]]))


def test_wrong_rank_token_ids():
    with pytest.raises(ValueError, match=r"shape \(batch, seqlen\), got \(5,\)"):
        _model()(torch.arange(5))


def test_empty_sequence():
    with pytest.raises(ValueError, match="input_ids is empty"):
        _model()(torch.zeros(2, 0, dtype=torch.long))


def test_cache_for_another_batch_size():
    model = _model()
    with pytest.raises(ValueError, match="this cache holds 3 sequences but the input has batch size 2"):
        model(_ids(2, 4), cache=model.empty_cache(3))


def test_cache_for_another_model():
    model = _model()
    other = mm.InferenceCache.empty(mm.MambaConfig(d_model=16, n_layer=2, vocab_size=45), 2)
    with pytest.raises(ValueError, match="this cache was built for another model"):
        model(_ids(2, 4), cache=other)


def test_step_needs_one_token():
    model = _model()
    cache = model.empty_cache(2)
    with pytest.raises(ValueError, match=r"step takes one token per row, shape \(b, 1\)"):
        model.step(_ids(2, 2), cache)


# ---- bad input at the model's door (issue 9): the argument named, nothing consumed -----------

@pytest.mark.parametrize("case, make, error, words", BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_forward_rejects_bad_ids(small_model, case, make, error, words):
    expect_error(lambda: small_model(make()), error, *words)


def test_forward_rejects_bad_num_last_tokens(small_model):
    expect_error(lambda: small_model(small_ids(), num_last_tokens=-1), ValueError, "num_last_tokens", ">= 0", "-1")
    expect_error(lambda: small_model(small_ids(), num_last_tokens=1.5), ValueError, "num_last_tokens", "1.5")


def test_forward_rejects_a_cache_of_the_wrong_type(small_model):
    expect_error(lambda: small_model(small_ids(), cache={"ssm": None}), TypeError, "cache", "InferenceCache", "dict")


def test_step_rejects_bad_input(small_model):
    cache = small_model.empty_cache(2)
    expect_error(lambda: small_model.step(small_ids(2, 2), cache), ValueError, "(b, 1)", "(2, 2)")
    expect_error(lambda: small_model.step(small_ids(2, 1), None), TypeError, "InferenceCache")
    expect_error(lambda: small_model.step(torch.zeros(2, 1), cache), TypeError, "input_ids_t", "torch.float32")
    expect_error(lambda: small_model.step(torch.full((2, 1), SMALL_VOCAB), cache), ValueError, "input_ids_t",
                 "vocab_size=50")
    assert cache.seqlen_offset == 0  # nothing was consumed by the failed calls


def test_failed_forward_leaves_the_cache_untouched(small_model):
    cache = small_model.empty_cache(2)
    with torch.no_grad():
        small_model(small_ids(2), cache=cache)
    before = [t.clone() for t in cache.tensors()]
    expect_error(lambda: small_model(torch.tensor([[1, 99], [1, 2]]), cache=cache), ValueError, "input_ids")
    assert cache.seqlen_offset == 5
    assert all(torch.equal(a, b) for a, b in zip(before, cache.tensors()))


def test_model_rejects_a_non_config():
    expect_error(lambda: mm.MambaLM({"d_model": 16}), TypeError, "config", "MambaConfig", "dict")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16])
def test_small_integer_ids_are_rejected_with_the_fix(dtype):
    """Adversarial review (2026-11-29, fixed in ede8461): ids of a small integer dtype are refused,
    naming the fix."""
    with pytest.raises(TypeError, match=r"input_ids .*torch.long.*input_ids.long\(\)"):
        tiny_lm()(torch.tensor([[1, 2]], dtype=dtype))


def test_bad_input_guard_fires_without_validation(small_model, monkeypatch):
    """Without the model's checks, out-of-range ids crash deep inside (an IndexError from the
    embedding, or a silently valid padded-vocabulary row) instead of a clear ValueError."""
    monkeypatch.setattr(model_mod, "check_input_ids", lambda ids, vocab_size, name="input_ids": None)
    for make in (lambda: torch.tensor([[1, 55]]), lambda: torch.tensor([[1, -1]])):
        with pytest.raises(AssertionError):
            expect_error(lambda: small_model(make()), ValueError, "input_ids", "vocab_size=50")


# ---- the mixer registry: a new layer kind reuses the LM, the cache and generate ---------------

class CumulativeMeanMixer(nn.Module):
    """A toy mixer: ``y_t = W (mean of hidden_1 .. hidden_t)``, a causal cumulative mean of a linear
    projection. Its states are its own (no conv_state, no ssm_state): the running sum
    ``(b, d_model)`` and the count ``(b, 1)`` of the tokens seen."""

    def __init__(self, config: mm.MambaConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def compute_dtype(self) -> torch.dtype:
        return torch.promote_types(self.proj.weight.dtype, torch.float32)

    def state_shapes(self, batch_size: int) -> dict[str, tuple]:
        return {"running_sum": (batch_size, self.config.d_model), "count": (batch_size, 1)}

    def allocate_inference_cache(self, batch_size, max_seqlen=None, dtype=None) -> dict[str, torch.Tensor]:
        dtype = dtype or self.compute_dtype()
        return {name: torch.zeros(shape, dtype=dtype, device=self.proj.weight.device)
                for name, shape in self.state_shapes(batch_size).items()}

    def forward(self, hidden, cache=None, attention_mask=None):
        x = self.proj(hidden).to(self.compute_dtype())  # (b, l, d_model)
        b, l, d = x.shape
        state = cache.layers[self.layer_idx] if cache is not None else self.allocate_inference_cache(b)
        sums = state["running_sum"][:, None] + x.cumsum(1)  # (b, l, d_model)
        counts = state["count"][:, None] + torch.arange(1, l + 1, dtype=x.dtype)[None, :, None]  # (b, l, 1)
        if cache is not None:
            state["running_sum"], state["count"] = sums[:, -1].detach(), counts[:, -1].detach()
        return (sums / counts).to(hidden.dtype)

    def step(self, hidden_t, cache):
        state = cache.layers[self.layer_idx]
        state["running_sum"] = state["running_sum"] + self.proj(hidden_t[:, 0]).to(self.compute_dtype())
        state["count"] = state["count"] + 1
        return (state["running_sum"] / state["count"])[:, None].to(hidden_t.dtype)  # (b, 1, d_model)


@pytest.fixture
def toy_layer():
    """``"Toy"`` registered to :class:`CumulativeMeanMixer` for one test, then removed."""
    register_mixer("Toy", CumulativeMeanMixer)
    yield "Toy"
    del MIXERS["Toy"]


def _toy_model(dtype=torch.float64):
    torch.manual_seed(0)
    config = mm.MambaConfig(d_model=16, n_layer=3, vocab_size=30, ssm_cfg={"layer": "Toy"})
    return mm.MambaLM(config).to(dtype).eval()


@torch.no_grad()
def test_a_registered_mixer_runs_through_the_lm_cache_and_generate(toy_layer, tmp_path):
    model = _toy_model()
    assert model.config.layer == "Toy"
    assert all(type(layer.mixer) is CumulativeMeanMixer for layer in model.backbone.layers)
    assert [layer.mixer.layer_idx for layer in model.backbone.layers] == [0, 1, 2]
    ids = _ids(2, 12, vocab=30)
    full = model(ids)
    assert full.shape == (2, 12, 32) and full.dtype == torch.float64
    # the cache holds the toy's own states, names and shapes, allocated by each layer
    cache = model.allocate_inference_cache(2)
    want = {"running_sum": (2, 16), "count": (2, 1)}
    assert [{k: tuple(v.shape) for k, v in layer.items()} for layer in cache.layers] == [want] * 3
    assert model.state_shapes(2) == [want] * 3 and cache.dtype == torch.float64
    for k in (0, 1, 5, 12):  # prefill + step = the full forward, float64
        torch.testing.assert_close(_prefill_then_step(model, ids, k), full, atol=1e-12, rtol=1e-12)
    # the one generate: greedy tokens equal the argmax of repeated full forwards
    out, ref = mm.generate(model, ids[:, :4], 6, temperature=0), ids[:, :4]
    for _ in range(6):
        ref = torch.cat([ref, model(ref)[:, -1, :30].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    # a Mamba-1 cache is refused by name, and a checkpoint is not written for a mixer no loader reads
    expect_error(lambda: model(ids, cache=mm.InferenceCache.empty(mm.MambaConfig(d_model=16, n_layer=3,
                                                                                 vocab_size=30), 2)),
                 ValueError, "another model", "layer 0 holds", "'conv_state'", "'running_sum'")
    expect_error(lambda: mm.save_pretrained(model, tmp_path / "toy"), ValueError, "CumulativeMeanMixer")


@pytest.mark.parametrize("kw, key, kind", [(dict(ssm_cfg={"layer": "Mamba3"}), "ssm_cfg['layer']", "'Mamba3'"),
                                           (dict(attn_layer_idx=[1]), "attn_layer_idx", "'MHA'")],
                         ids=["Mamba3", "attention"])
def test_an_unregistered_layer_kind_is_refused_by_name(kw, key, kind):
    config = small_config(**kw)  # a valid config: the registry, not the config, knows what is built
    err = expect_error(lambda: mm.MambaLM(config), ValueError, key, kind, "no registered mixer", "registered: [",
                       "'Mamba1'")
    assert f"index {1 if 'attn_layer_idx' in kw else 0}" in str(err)


def test_register_mixer_refuses_to_rebind_a_name():
    expect_error(lambda: register_mixer("Mamba1", CumulativeMeanMixer), ValueError, "'Mamba1'",
                 "already registered to MambaMixer")
    for name in ("", 2, None):
        expect_error(lambda: register_mixer(name, CumulativeMeanMixer), ValueError, "layer name", repr(name))
    register_mixer("Mamba1", mm.MambaMixer)  # the same class again: nothing changes
    assert MIXERS["Mamba1"] is mm.MambaMixer and "Toy" not in MIXERS


# ---- d_intermediate > 0: a gated MLP after each mixer (the official Block's norm2 and mlp) ------

def _mlp_model(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return mm.MambaLM(mm.MambaConfig(**{**dict(d_model=16, n_layer=2, vocab_size=45, d_state=4,
                                                d_intermediate=40), **kw})).to(dtype).eval()


def test_d_intermediate_adds_norm2_and_a_gated_mlp_with_the_official_names():
    model = _mlp_model()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for i in range(2):  # hidden width 40 rounded up to 128: fc1 (2 * 128, d_model), fc2 (d_model, 128)
        p = f"backbone.layers.{i}."
        assert (shapes[p + "norm2.weight"], shapes[p + "mlp.fc1.weight"], shapes[p + "mlp.fc2.weight"]) == (
            (16,), (256, 16), (16, 128))
        assert not any(k.startswith(p + "mlp.") and k.endswith(".bias") for k in shapes)  # no biases
    assert not any("norm2" in k or "mlp" in k for k in _mlp_model(d_intermediate=0).state_dict())
    assert GatedMLP(16, 128).fc2.weight.shape == (16, 128) and GatedMLP(16, 129).fc2.weight.shape == (16, 256)


@torch.no_grad()
def test_the_gated_mlp_is_fc2_of_y_times_silu_gate():
    torch.manual_seed(0)
    mlp, x = GatedMLP(16, 40).double(), torch.randn(2, 5, 16, dtype=torch.float64)
    y, gate = (x @ mlp.fc1.weight.T).chunk(2, dim=-1)  # (b, l, 128) each
    torch.testing.assert_close(mlp(x), (y * gate * torch.sigmoid(gate)) @ mlp.fc2.weight.T, rtol=1e-12, atol=1e-12)


@torch.no_grad()
@pytest.mark.parametrize("k", [0, 1, 3, 7, 12])
def test_d_intermediate_forward_equals_prefill_then_step(k):
    model = _mlp_model()
    ids = _ids(2, 12)
    torch.testing.assert_close(_prefill_then_step(model, ids, k), model(ids), atol=1e-12, rtol=1e-12)


@torch.no_grad()
def test_d_intermediate_official_checkpoint_round_trip_is_bit_identical(tmp_path):
    model = _mlp_model(torch.float32)
    folder = mm.save_pretrained(model, tmp_path / "official", layout="official")
    back = mm.load_pretrained(folder)
    assert back.config == model.config and back.config.d_intermediate == 40
    ids = _ids(2, 9)
    assert torch.equal(back(ids), model(ids))


# ---- configs written before the layer protocol ---------------------------------------------

# MambaConfig.to_dict() as the package wrote it before ssm_cfg, d_intermediate, attn_layer_idx and
# attn_cfg existed (commit 4b640f7): what models/tasks/*/ and users' files hold.
OLD_TO_DICT = {"d_model": 32, "n_layer": 2, "vocab_size": 45, "d_state": 16, "d_conv": 4, "expand": 2,
               "dt_rank": 2, "dt_min": 0.001, "dt_max": 0.1, "dt_init": "random", "dt_scale": 1.0,
               "dt_init_floor": 0.0001, "conv_bias": True, "bias": False, "pad_vocab_size_multiple": 8,
               "tie_embeddings": True, "rms_norm_eps": 1e-05, "residual_in_fp32": True}


def test_an_old_to_dict_gives_exactly_todays_model():
    old = mm.MambaConfig.from_dict(OLD_TO_DICT)
    flat = mm.MambaConfig(d_model=32, n_layer=2, vocab_size=45)
    assert old == flat
    assert (old.layer, old.d_intermediate, old.attn_layer_idx, old.attn_cfg) == ("Mamba1", 0, [], {})
    with torch.device("meta"):
        shapes = [{k: tuple(v.shape) for k, v in mm.MambaLM(cfg).state_dict().items()} for cfg in (old, flat)]
    assert shapes[0] == shapes[1]
    assert list(shapes[0]) == list(_model().state_dict())  # the same names, in the same order
    torch.manual_seed(0)
    a = mm.MambaLM(old)
    torch.manual_seed(0)
    b = mm.MambaLM(flat)
    ids = _ids(2, 7)
    assert torch.equal(a(ids), b(ids))


@pytest.mark.parametrize("layer, cls, words", [
    (" Mamba1", mm.MambaMixer, ["layer name"]),
    ("Bad", 42, ["nn.Module class"]),
    ("Bad", object, ["nn.Module class"]),
])
def test_register_mixer_refuses_odd_names_and_non_classes(layer, cls, words):
    expect_error(lambda: register_mixer(layer, cls), ValueError, *words)
    assert layer not in MIXERS


class StatelessMixer(nn.Module):
    """A toy mixer that keeps no state at all (``y_t = W x_t``): its cache entry is an empty dict."""

    def __init__(self, config, layer_idx=0):
        super().__init__()
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def compute_dtype(self):
        return torch.promote_types(self.proj.weight.dtype, torch.float32)

    def state_shapes(self, batch_size):
        return {}

    def allocate_inference_cache(self, batch_size, max_seqlen=None, dtype=None):
        return {}

    def forward(self, hidden, cache=None, attention_mask=None):
        return self.proj(hidden)

    def step(self, hidden_t, cache):
        return self.proj(hidden_t)


@torch.no_grad()
def test_a_mixer_without_state_decodes_through_the_one_generate(monkeypatch):
    """A new user's first toy (from the README's contract) returned {} and crashed generate."""
    monkeypatch.setitem(MIXERS, "Stateless", StatelessMixer)
    torch.manual_seed(0)
    model = mm.MambaLM(mm.MambaConfig(d_model=16, n_layer=2, vocab_size=30, ssm_cfg={"layer": "Stateless"})).eval()
    ids = _ids(2, 5, vocab=30)
    out, ref = mm.generate(model, ids, 4, temperature=0), ids
    for _ in range(4):
        ref = torch.cat([ref, model(ref)[:, -1, :30].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    assert model.allocate_inference_cache(2).batch_size is None


def test_register_mixer_names_the_missing_methods():
    class Bare(nn.Module):
        def forward(self, hidden, cache=None, attention_mask=None):
            return hidden

    expect_error(lambda: register_mixer("Bare", Bare), ValueError, "Bare lacks", "'step'", "'state_shapes'",
                 "'allocate_inference_cache'", "'compute_dtype'")
    assert "Bare" not in MIXERS
