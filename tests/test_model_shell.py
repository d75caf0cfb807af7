"""One model shell for every generation (``minimamba_core/model.py``): the mixer registry (toy
mixers with their own states, or none, run through the one LM, cache and ``generate``), the gated
MLP of ``d_intermediate > 0``, and configs saved before the layer protocol existed."""

import pytest
import torch
from helpers import expect_error, prefill_then_step, small_config
from torch import nn

import minimamba_core as mm
from minimamba_core.model import MIXERS, GatedMLP, register_mixer


def _ids(b, l, vocab=45, seed=1):
    return torch.randint(0, vocab, (b, l), generator=torch.Generator().manual_seed(seed))


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
        torch.testing.assert_close(prefill_then_step(model, ids, k), full, atol=1e-12, rtol=1e-12)
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


@pytest.mark.parametrize("kw, key, kind", [(dict(ssm_cfg={"layer": "Mamba4"}), "ssm_cfg['layer']", "'Mamba4'")],
                         ids=["Mamba4"])  # "MHA" (attn_layer_idx) is registered: tests/test_attention.py
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
def test_d_intermediate_forward_equalsprefill_then_step(k):
    model = _mlp_model()
    ids = _ids(2, 12)
    torch.testing.assert_close(prefill_then_step(model, ids, k), model(ids), atol=1e-12, rtol=1e-12)


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
    assert list(shapes[0]) == list(mm.MambaLM(flat).state_dict())  # the same names, in the same order
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
