"""The Mamba-2 mixer (``minimamba_core/mixer2.py``) on the shared ``MambaLM``: official names, shapes
and initialization; cached decoding equal to the full forward at every split point (by steps and by
multi-token continuations); left padding; the gated, grouped norm; equality with transformers'
``Mamba2ForCausalLM`` (its pure-PyTorch path) on the same weights, including a chunked prefill plus a
multi-token continuation and a left-padded batch; the three Mamba-2 bugs of transformers as
regression tests (#37533 group expansion is in test_ssd.py; #35943 grouped norm; #46032 multi-token
continuation).
"""

from __future__ import annotations

import pytest
import torch
from helpers import expect_error, prefill_then_step

import minimamba_core as mm

F64 = torch.float64
VOCAB = 64


def _config(**kw) -> mm.MambaConfig:
    """d_model 32, d_inner 64 = 4 heads of 16, d_state 8, chunk 4: every sequence spans chunks."""
    base = dict(d_model=32, n_layer=2, vocab_size=VOCAB, ssm_cfg={"layer": "Mamba2"}, headdim=16, d_state=8,
                chunk_size=4, pad_vocab_size_multiple=1)
    return mm.MambaConfig(**{**base, **kw})


def _model(seed=0, dtype=torch.float32, perturb=True, **kw) -> mm.MambaLM:
    """A Mamba-2 LM; ``perturb`` moves every weight off its initial value (D = 1, norm = 1...)."""
    torch.manual_seed(seed)
    model = mm.MambaLM(_config(**kw))
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype).eval()


def _ids(b=2, l=11, seed=1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, l), generator=torch.Generator().manual_seed(seed))


# ---- names, shapes, initialization ---------------------------------------------------------

def test_official_names_and_shapes():
    # the shapes of mamba_ssm's Mamba2 (modules/mamba2.py, commit 60dadf2) for d_model 32, expand 2,
    # headdim 16 (H = 4), ngroups 2, d_state 8, d_conv 4: d_in_proj = 2*64 + 2*2*8 + 4 = 164
    mixer = _model(ngroups=2).backbone.layers[0].mixer
    shapes = {k: tuple(v.shape) for k, v in mixer.state_dict().items()}
    assert shapes == {"in_proj.weight": (164, 32), "conv1d.weight": (96, 1, 4), "conv1d.bias": (96,),
                      "dt_bias": (4,), "A_log": (4,), "D": (4,), "norm.weight": (64,), "out_proj.weight": (32, 64)}
    assert tuple(_model(D_has_hdim=True).backbone.layers[0].mixer.D.shape) == (64,)
    assert not hasattr(_model(rmsnorm=False).backbone.layers[0].mixer, "norm")


def test_official_initialization():
    torch.manual_seed(0)
    mixer = mm.Mamba2Mixer(mm.MambaConfig(d_model=256, n_layer=4, vocab_size=8, ssm_cfg={"layer": "Mamba2"},
                                          headdim=8))  # 64 heads
    A = -torch.exp(mixer.A_log)
    assert A.max() <= -1 and A.min() >= -16 and A.max() - A.min() > 10  # -U(1, 16): A_init_range
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001  # log-uniform in [dt_min, dt_max]
    assert torch.equal(mixer.D, torch.ones(64)) and torch.equal(mixer.norm.weight, torch.ones(512))
    bound = 512 ** -0.5 / 4 ** 0.5  # kaiming bound 1/sqrt(fan_in = d_inner) over sqrt(n_layer)
    assert bound * 0.9 < mixer.out_proj.weight.abs().max() <= bound + 1e-7


@pytest.mark.parametrize("kw,words", [
    (dict(headdim=24), ["headdim=24", "d_inner=64", "nheads * headdim"]),
    (dict(ngroups=3), ["ngroups=3", "nheads=4"]),
    (dict(chunk_size=0), ["chunk_size", "positive int", "0"]),
    (dict(dt_limit=(0.2, 0.1)), ["dt_limit", "0 <= lo <= hi", "(0.2, 0.1)"]),
    (dict(A_init_range=(16, 1)), ["A_init_range", "(16.0, 1.0)"]),
    (dict(ssm_cfg={"layer": "Mamba2", "dt_rank": 4}), ["dt_rank", "a Mamba2 layer does not take it"]),
])
def test_config_errors_name_the_field(kw, words):
    expect_error(lambda: _config(**kw), ValueError, *words)


def test_a_mamba2_field_in_a_mamba1_config_is_refused():
    expect_error(lambda: mm.MambaConfig(d_model=32, n_layer=1, vocab_size=8, headdim=16), ValueError,
                 "headdim is a Mamba-2 field", "'Mamba1'", "ssm_cfg={'layer': 'Mamba2'}")


def test_cache_shapes():
    model = _model(ngroups=2)
    cache = model.allocate_inference_cache(3)
    assert cache.layers[0]["conv_state"].shape == (3, 64 + 2 * 2 * 8, 4)  # (b, d_inner + 2 G N, d_conv)
    assert cache.layers[0]["ssm_state"].shape == (3, 4, 16, 8)  # (b, H, P, N)
    assert cache.dtype == torch.float32 and model.state_shapes(3)[1] == {k: tuple(v.shape) for k, v in
                                                                           cache.layers[1].items()}


# ---- cached decoding is the full forward ------------------------------------------------

@pytest.mark.parametrize("ngroups", [1, 2])
def test_every_split_point_by_steps_and_by_continuation(ngroups):
    model = _model(ngroups=ngroups, dtype=F64)
    ids = _ids(l=11)
    full = model(ids)
    for k in range(1, 11):
        assert (prefill_then_step(model, ids, k) - full).abs().max() < 1e-12, k
        cache = model.allocate_inference_cache(2)
        # transformers #46032: a cached forward of several tokens was taken as one step
        parts = [model(ids[:, :k], cache=cache), model(ids[:, k:], cache=cache)]
        assert (torch.cat(parts, 1) - full).abs().max() < 1e-12, k
        assert cache.seqlen_offset == 11


def test_cached_decoding_and_generate_on_each_device(device):
    """On every device present (float64; float32 on MPS): prefill + steps equal the full forward,
    which equals the CPU's, and greedy generation there is the argmax of the full forward."""
    dtype = torch.float32 if device.type == "mps" else F64
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    cpu_model = _model(ngroups=2, dtype=F64)
    model = _model(ngroups=2, dtype=F64).to(device, dtype)
    ids = _ids(l=11)
    full = model(ids.to(device))
    assert (full.cpu().double() - cpu_model(ids)).abs().max() < tol
    for k in (1, 4, 10):
        assert (prefill_then_step(model, ids.to(device), k) - full).abs().max() < tol, k
    out = mm.generate(model, ids[:1, :6].to(device), max_new_tokens=4, temperature=0.0)
    assert out.device.type == device.type
    for t in range(6, 10):
        assert out[0, t] == model(out[:, :t])[0, -1, :VOCAB].argmax()


def test_three_continuations_in_a_row():
    model = _model(dtype=F64)
    ids = _ids(l=17)
    cache = model.allocate_inference_cache(2)
    parts = [model(ids[:, a:b], cache=cache) for a, b in ((0, 5), (5, 6), (6, 13), (13, 17))]
    assert (torch.cat(parts, 1) - model(ids)).abs().max() < 1e-12


def test_left_padded_rows_equal_the_rows_alone():
    model = _model(dtype=F64, ngroups=2)
    ids = _ids(b=3, l=10)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :1] = 0
    logits = model(ids, attention_mask=mask)
    for row, pad in ((0, 4), (1, 0), (2, 1)):
        alone = model(ids[row:row + 1, pad:])
        assert (logits[row, pad:] - alone[0]).abs().max() < 1e-12, row
    out = mm.generate(model, ids, max_new_tokens=4, temperature=0.0, attention_mask=mask)
    assert torch.equal(out[0, 10:], mm.generate(model, ids[:1, 4:], max_new_tokens=4, temperature=0.0)[0, 6:])


def test_generate_greedy_is_the_argmax_of_the_full_forward():
    model = _model()
    ids = _ids(b=1, l=6)
    out = mm.generate(model, ids, max_new_tokens=5, temperature=0.0)
    for t in range(6, 11):
        assert out[0, t] == model(out[:, :t])[0, -1, :VOCAB].argmax()


# ---- the gated, grouped norm (transformers #35943) ------------------------------------------

def test_gated_norm_is_per_group():
    torch.manual_seed(0)
    norm = mm.RMSNormGated(12, eps=1e-5, group_size=4)
    with torch.no_grad():
        norm.weight.normal_()
    y, z = torch.randn(2, 3, 12, dtype=F64), torch.randn(2, 3, 12, dtype=F64)
    gated = y * torch.nn.functional.silu(z)
    groups = [g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5) for g in gated.split(4, dim=-1)]
    expected = torch.cat(groups, -1) * norm.weight.double()
    assert (norm.double()(y, z) - expected).abs().max() < 1e-12
    whole = gated / torch.sqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight.double()
    assert (norm.double()(y, z) - whole).abs().max() > 1e-2  # over all of d_inner: the bug
    after = mm.RMSNormGated(12, group_size=4, norm_before_gate=True).double()
    plain = torch.cat([g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5) for g in y.split(4, -1)], -1)
    assert (after(y, z) - plain * torch.nn.functional.silu(z)).abs().max() < 1e-12


def test_group_size_must_divide():
    expect_error(lambda: mm.RMSNormGated(12, group_size=5), ValueError, "group_size=5", "d=12")


# ---- half precision ---------------------------------------------------------------------------

def test_bf16_keeps_A_log_D_dt_bias_float32_and_decodes():
    model = _model().to(torch.bfloat16)
    mixer = model.backbone.layers[0].mixer
    assert {mixer.A_log.dtype, mixer.D.dtype, mixer.dt_bias.dtype} == {torch.float32}
    assert mixer.in_proj.weight.dtype == torch.bfloat16
    ids = _ids(l=7)
    full = model(ids).float()
    assert full.dtype == torch.float32 and torch.isfinite(full).all()
    assert model.allocate_inference_cache(2).dtype == torch.float32
    assert (prefill_then_step(model, ids, 3).float() - full).abs().max() < 0.1  # bf16 rounding only


# ---- equal to transformers' Mamba2ForCausalLM on the same weights ---------------------------

def _hf_twin(model: mm.MambaLM):
    transformers = pytest.importorskip("transformers")
    cfg = model.config
    hc = transformers.Mamba2Config(
        num_heads=cfg.nheads, head_dim=cfg.headdim, vocab_size=cfg.padded_vocab_size, hidden_size=cfg.d_model,
        state_size=cfg.d_state, num_hidden_layers=cfg.n_layer, n_groups=cfg.ngroups, expand=cfg.expand,
        conv_kernel=cfg.d_conv, chunk_size=cfg.chunk_size, use_bias=cfg.bias, use_conv_bias=cfg.conv_bias,
        layer_norm_epsilon=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        residual_in_fp32=cfg.residual_in_fp32, time_step_limit=cfg.dt_limit)
    hf = transformers.Mamba2ForCausalLM(hc).eval()
    state = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in model.state_dict().items()}
    hf.load_state_dict(state, strict=True)
    return hf


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("ngroups", [1, 2])
def test_chunked_prefill_and_continuation_equal_transformers(ngroups):
    model = _model(ngroups=ngroups)
    hf = _hf_twin(model)
    ids = _ids(l=13)  # 13 = 3 chunks of 4 and one step
    with torch.no_grad():
        theirs = hf(ids).logits
        cache = model.allocate_inference_cache(2)
        ours = torch.cat([model(ids[:, :6], cache=cache), model(ids[:, 6:11], cache=cache),
                          model.step(ids[:, 11:12], cache), model(ids[:, 12:], cache=cache)], 1)
    assert _rel(model(ids).detach(), theirs) < 1e-5
    assert _rel(ours, theirs) < 1e-5


def test_left_padded_batch_equals_transformers():
    model = _model(ngroups=2)
    hf = _hf_twin(model)
    ids = _ids(b=2, l=9)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        theirs = hf(ids, attention_mask=mask).logits
        alone = hf(ids[1:, 3:]).logits
    assert _rel(ours[0], theirs[0]) < 1e-5 and _rel(ours[1, 3:], alone[0]) < 1e-5


def test_mamba_ssm_calling_convention_holds_mamba2_states():
    # mm.Mamba / InferenceParams (interop/compat.py): the dict holds each layer's Mamba-2 pair,
    # shaped as mamba_ssm's Mamba2._get_states_from_cache allocates them
    torch.manual_seed(0)
    model = mm.Mamba(config=_config()).to(F64).eval()
    ids = _ids(l=9)
    params = mm.InferenceParams(max_seqlen=16, max_batch_size=2)
    outs = [model(ids[:, :5], inference_params=params)]
    params.seqlen_offset += 5
    for t in range(5, 9):
        outs.append(model(ids[:, t:t + 1], inference_params=params))
        params.seqlen_offset += 1
    assert (torch.cat(outs, 1) - model(ids)).abs().max() < 1e-12
    conv, ssm = params.key_value_memory_dict[1]
    assert tuple(conv.shape) == (2, 80, 4) and tuple(ssm.shape) == (2, 4, 16, 8)


@pytest.mark.parametrize("kw", [dict(dt_rank=8), dict(dt_init="constant"), dict(dt_scale=5.0)])
def test_a_mamba1_field_in_a_mamba2_config_is_refused(kw):
    name = next(iter(kw))
    expect_error(lambda: _config(**kw), ValueError, f"MambaConfig.{name}=", "Mamba-1 field", "'Mamba2'")
    import dataclasses  # a replace() from a Mamba-1 config carries dt_rank 'auto' resolved: accepted
    m1 = mm.MambaConfig(d_model=32, n_layer=1, vocab_size=8)
    assert dataclasses.replace(m1, ssm_cfg={"layer": "Mamba2"}, headdim=16).layer == "Mamba2"


# ---- from a review that tried to break it ----------------------------------------------------

def test_cached_states_hold_no_prompt_sized_buffers():
    # the states stored after a prefill must be copies of state size, not views that keep the
    # (b, chunks + 1, H, P, N) entering states or the (b, conv_dim, k + l) conv input alive
    for model in (_model(), mm.MambaLM(mm.MambaConfig(d_model=32, n_layer=1, vocab_size=VOCAB, d_state=8)).eval()):
        cache = model.allocate_inference_cache(1)
        model(_ids(b=1, l=300), cache=cache)
        for name, t in cache.layers[0].items():
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name


def test_dt_limit_needs_a_finite_lower_end():
    import math
    expect_error(lambda: _config(dt_limit=(math.inf, math.inf)), ValueError, "dt_limit", "lo finite")
    (x, dt, A, B, C) = (torch.randn(1, 3, 4, 2), torch.randn(1, 3, 4), -torch.rand(4), torch.randn(1, 3, 1, 2),
                        torch.randn(1, 3, 1, 2))
    expect_error(lambda: mm.ssd(x, dt, A, B, C, 2, dt_limit=(math.inf, math.inf)), ValueError, "lo finite")


def test_mlp_branches_are_scaled_as_the_official_init():
    # official _init_weights (mamba_ssm/models/mixer_seq_simple.py): out_proj and fc2 scaled by
    # 1/sqrt(2 n_layer) with a gated MLP; the kaiming bound of a (fan_in) weight is 1/sqrt(fan_in)
    torch.manual_seed(0)
    for kw in (dict(), dict(ssm_cfg={"layer": "Mamba2"}, headdim=16)):
        model = mm.MambaLM(mm.MambaConfig(d_model=64, n_layer=8, vocab_size=8, d_intermediate=256, **kw))
        block = model.backbone.layers[0]
        for weight in (block.mixer.out_proj.weight, block.mlp.fc2.weight):
            bound = weight.shape[1] ** -0.5 / (2 * 8) ** 0.5
            assert 0.9 * bound < weight.abs().max() <= bound + 1e-7
