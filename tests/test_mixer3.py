"""The Mamba-3 mixer (``minimamba_core/mixer3.py``) on the shared ``MambaLM``: official names, shapes
and initialization; the cache (angles, SSM state, previous ``k`` and ``x``) equal to the full forward
at every split point, by steps and by multi-token continuations; left padding; ``generate``; the
mixer's math checked against the scan written out from the block's equations; config errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import prefill_then_step

import minimamba_core as mm
from minimamba_core.mamba3 import mamba3_sequential

F64 = torch.float64
VOCAB = 64


def _config(**kw) -> mm.MambaConfig:
    """d_model 32, d_inner 64 = 4 heads of 16, d_state 8 (2 rotated pairs), chunk 4."""
    base = dict(d_model=32, n_layer=2, vocab_size=VOCAB, ssm_cfg={"layer": "Mamba3"}, headdim=16, d_state=8,
                chunk_size=4, pad_vocab_size_multiple=1)
    return mm.MambaConfig(**{**base, **kw})


def _model(seed=0, dtype=F64, perturb=True, **kw) -> mm.MambaLM:
    torch.manual_seed(seed)
    model = mm.MambaLM(_config(**kw))
    if perturb:  # move every weight off its initial value (biases 1, D 1, norms 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype).eval()


def _ids(b=2, l=11, seed=1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, l), generator=torch.Generator().manual_seed(seed))


def test_official_names_shapes_and_initialization():
    torch.manual_seed(0)
    mixer = mm.MambaLM(_config(ngroups=2)).backbone.layers[0].mixer
    assert isinstance(mixer, mm.Mamba3Mixer)
    shapes = {n: tuple(p.shape) for n, p in mixer.named_parameters()}
    # official: d_in_proj = 2 d_inner + 2 d_state ngroups mimo_rank + 3 nheads + num_rope_angles
    assert shapes == {"in_proj.weight": (2 * 64 + 2 * 8 * 2 + 3 * 4 + 2, 32), "dt_bias": (4,), "B_bias": (4, 1, 8),
                      "C_bias": (4, 1, 8), "B_norm.weight": (8,), "C_norm.weight": (8,), "D": (4,),
                      "out_proj.weight": (32, 64)}
    assert torch.equal(mixer.B_bias, torch.ones(4, 1, 8)) and torch.equal(mixer.C_bias, torch.ones(4, 1, 8))
    assert torch.equal(mixer.D, torch.ones(4))
    dt = F.softplus(mixer.dt_bias)
    assert ((dt >= 1e-3 - 1e-7) & (dt <= 0.1 + 1e-7)).all()
    with_norm = mm.MambaLM(_config(is_outproj_norm=True)).backbone.layers[0].mixer
    assert tuple(with_norm.norm.weight.shape) == (64,)
    assert mm.MambaLM(_config(rope_fraction=1.0)).backbone.layers[0].mixer.num_rope_angles == 4


def test_mixer_is_the_block_equations_on_the_reference_scan():
    """The block written out by hand (split, heavy tail, softplus, RMSNorm over N) on mamba3_sequential."""
    model = _model(ngroups=2)
    mixer = model.backbone.layers[0].mixer
    u = torch.randn(2, 9, 32, dtype=F64, generator=torch.Generator().manual_seed(5))
    z, x, B, C, ddt, dA, trap, ang = mixer.in_proj(u).split([64, 64, 16, 16, 4, 4, 4, 2], dim=-1)
    neg = dA.clamp_max(0)
    A = -torch.clamp(dA.clamp_min(0) + 1 / (1 - neg), min=1e-4)
    dt = F.softplus(ddt + mixer.dt_bias)
    rms = lambda v, w: v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w  # noqa: E731
    y = mamba3_sequential(x.unflatten(-1, (4, 16)), dt, A, rms(B.unflatten(-1, (2, 8)), mixer.B_norm.weight),
                          rms(C.unflatten(-1, (2, 8)), mixer.C_norm.weight), trap, ang[:, :, None].expand(-1, -1, 4, -1),
                          mixer.B_bias[:, 0], mixer.C_bias[:, 0], mixer.D, z.unflatten(-1, (4, 16)))
    assert (mixer(u) - mixer.out_proj(y.flatten(-2))).abs().max() < 1e-12


def test_cache_shapes():
    model = _model()
    cache = model.allocate_inference_cache(3)
    assert {k: tuple(v.shape) for k, v in cache.layers[0].items()} == {
        "angle_state": (3, 4, 2), "ssm_state": (3, 4, 16, 8), "k_state": (3, 4, 8), "v_state": (3, 4, 16)}


@pytest.mark.parametrize("kw", [dict(ngroups=1), dict(ngroups=2), dict(is_outproj_norm=True)])
def test_every_split_point_by_steps_and_by_continuation(kw):
    model = _model(**kw)
    ids = _ids(l=11)
    full = model(ids)
    for k in range(1, 11):
        assert (prefill_then_step(model, ids, k) - full).abs().max() < 1e-12, k
        cache = model.allocate_inference_cache(2)
        parts = [model(ids[:, :k], cache=cache), model(ids[:, k:], cache=cache)]
        assert (torch.cat(parts, 1) - full).abs().max() < 1e-12, k
        assert cache.seqlen_offset == 11


def test_three_continuations_in_a_row():
    model = _model()
    ids = _ids(l=17)
    cache = model.allocate_inference_cache(2)
    parts = [model(ids[:, a:b], cache=cache) for a, b in ((0, 5), (5, 6), (6, 13), (13, 17))]
    assert (torch.cat(parts, 1) - model(ids)).abs().max() < 1e-12


def test_left_padded_rows_equal_the_rows_alone():
    model = _model(ngroups=2)
    ids = _ids(b=3, l=10)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :1] = 0
    logits = model(ids, attention_mask=mask)
    for row, pad in ((0, 4), (1, 0), (2, 1)):
        alone = model(ids[row:row + 1, pad:])
        assert (logits[row, pad:] - alone[0]).abs().max() < 1e-12, row


def test_generate_greedy_is_the_argmax_of_the_full_forward():
    model = _model(dtype=torch.float32)
    ids = _ids(b=1, l=6)
    out = mm.generate(model, ids, max_new_tokens=5, temperature=0.0)
    assert out.shape == (1, 11)
    for t in range(6, 11):
        assert out[0, t] == model(out[:, :t])[0, -1, :VOCAB].argmax()


def test_bf16_keeps_biases_float32_and_decodes():
    model = _model(dtype=torch.float32).to(torch.bfloat16)
    mixer = model.backbone.layers[0].mixer
    assert {mixer.dt_bias.dtype, mixer.B_bias.dtype, mixer.C_bias.dtype, mixer.D.dtype} == {torch.float32}
    ids = _ids(l=7)
    full = model(ids).float()
    assert torch.isfinite(full).all()
    assert (prefill_then_step(model, ids, 3).float() - full).abs().max() < 0.1  # bf16 rounding only


@pytest.mark.parametrize("kw, words", [
    (dict(is_mimo=True), "MIMO is not implemented"),
    (dict(rope_fraction=0.25), "rope_fraction must be 0.5 or 1.0"),
    (dict(d_state=2), "leaves no pair to rotate"),
    (dict(A_floor=0.0), "A_floor must be a positive number"),
    (dict(headdim=12), "headdim=12 must divide"),
    (dict(ngroups=3), "ngroups=3 must divide"),
    (dict(ssm_cfg={"layer": "Mamba3", "d_conv": 4}), "a Mamba3 layer does not take it"),
    (dict(dt_rank=3), "is a Mamba-1 field"),
])
def test_config_errors_name_the_field(kw, words):
    with pytest.raises(ValueError, match=words):
        _config(**kw)


@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
def test_a_mamba3_field_elsewhere_is_refused(layer):
    with pytest.raises(ValueError, match="is a Mamba-3 field"):
        mm.MambaConfig(d_model=32, n_layer=1, vocab_size=VOCAB, ssm_cfg={"layer": layer}, A_floor=0.5)
    assert math.isclose(_config().A_floor, 1e-4)


@pytest.mark.parametrize("kw", [dict(dt_limit=(0.0, 1e-6)), dict(d_conv=2), dict(conv_bias=False), dict(bias=True),
                                dict(rmsnorm=False), dict(norm_before_gate=True), dict(D_has_hdim=True),
                                dict(A_init_range=(2.0, 3.0))])
def test_a_field_mamba3_has_no_use_for_is_refused(kw):
    """Adversarial review (2026-12-08): these were accepted and changed nothing."""
    with pytest.raises(ValueError, match=f"{next(iter(kw))}.*has no effect in a 'Mamba3' layer"):
        mm.MambaConfig(d_model=32, n_layer=1, vocab_size=40, ssm_cfg={"layer": "Mamba3"}, d_state=8, headdim=8, **kw)


@pytest.mark.parametrize("kw", [dict(headdim=8, ngroups=2, chunk_size=4), dict(headdim=16, attn_layer_idx=[1],
                                                                               attn_cfg={"num_heads": 2})])
def test_config_and_weights_round_trip_through_a_saved_folder(tmp_path, kw):
    """Adversarial review (2026-12-08): to_dict dropped headdim, ngroups and chunk_size (Mamba-2 fields
    that Mamba-3 takes too), so a saved Mamba-3 model reloaded with another shape or chunk."""
    from minimamba_core.training.tasks import load_task_model, save_task_model

    config = mm.MambaConfig(d_model=32, n_layer=2, vocab_size=40, ssm_cfg={"layer": "Mamba3"}, d_state=8, **kw)
    assert mm.MambaConfig.from_dict(config.to_dict()) == config
    torch.manual_seed(0)
    model = mm.MambaLM(config).eval()
    save_task_model(model, tmp_path)
    loaded, _ = load_task_model(tmp_path)
    ids = torch.randint(0, 40, (1, 9), generator=torch.Generator().manual_seed(1))
    assert loaded.config == config and torch.equal(loaded(ids), model(ids))
