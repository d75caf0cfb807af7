"""Attention as a mixer kind (``minimamba_core/attention.py``): the mixer against attention written
out by hand (a causal softmax, rotary positions as complex multiplications, absolute positions,
grouped-query heads), its growing key/value cache against the full forward at every split point,
the Transformer and the hybrids (Mamba-1 and Mamba-2) with one mixed cache and the one ``generate``,
left padding, precision, and the configs (round trips, clear errors)."""

import json
import math

import pytest
import torch
from helpers import expect_error, prefill_then_step

import minimamba_core as mm
from minimamba_core.attention import AttentionMixer, attention_reference, rotary
from minimamba_core.training import tasks

F64 = torch.float64
VOCAB = 45


def _config(n_layer=2, attn_layer_idx=(0, 1), d_intermediate=40, **attn):
    attn = {"num_heads": 4, **attn}
    return mm.MambaConfig(d_model=32, n_layer=n_layer, vocab_size=VOCAB, d_state=4,
                          attn_layer_idx=list(attn_layer_idx), attn_cfg=attn, d_intermediate=d_intermediate)


def _model(dtype=F64, seed=0, **kw) -> mm.MambaLM:
    torch.manual_seed(seed)
    return mm.MambaLM(_config(**kw)).to(dtype).eval()


def _ids(b=2, l=12, seed=1):
    return torch.randint(0, VOCAB, (b, l), generator=torch.Generator().manual_seed(seed))


# ---- the mixer equals attention written out ---------------------------------------------------

@torch.no_grad()
def test_reference_on_hand_computed_cases():
    # q = 0: every allowed key weighs the same, so y_t is the mean of v_0 .. v_t (causal)
    v = torch.arange(1.0, 5.0, dtype=F64).reshape(1, 4, 1, 1)  # values 1, 2, 3, 4
    y = attention_reference(torch.zeros(1, 4, 1, 1, dtype=F64), torch.randn(1, 4, 1, 1, dtype=F64), v)
    assert torch.equal(y.flatten(), torch.tensor([1.0, 1.5, 2.0, 2.5], dtype=F64))
    # two positions, q_1 = 1, k = (0, 1), scale 1: weights (1, e) / (1 + e) on v = (0, 1)
    q, k = torch.tensor([0.0, 1.0], dtype=F64).reshape(1, 2, 1, 1), torch.tensor([0.0, 1.0], dtype=F64).reshape(1, 2, 1, 1)
    y = attention_reference(q, k, k, softmax_scale=1.0)
    assert abs(float(y[0, 1, 0, 0]) - math.e / (1 + math.e)) < 1e-15 and float(y[0, 0, 0, 0]) == 0.0
    # a padded key is never read: mask key 0, and query 1 reads v_1 alone
    y = attention_reference(q, k, v[:, :2], softmax_scale=1.0, key_mask=torch.tensor([[False, True]]))
    assert float(y[0, 1, 0, 0]) == 2.0


def _rope_by_complex_numbers(x, positions, r, base, interleaved):
    """RoPE as RoFormer writes it (Su et al. 2021, Section 3.4.2): a pair of channels is one complex number
    multiplied by exp(i * pos * base**(-2j / r)). Independent of the package's rotate-half code."""
    if r == 0:
        return x
    i = torch.arange(r // 2, dtype=F64)
    a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + r // 2)  # the channels of pair j
    angle = positions[:, :, None, None].to(F64) * base ** (-2 * i / r)  # (b, l, 1, r/2)
    z = torch.complex(x[..., a.long()], x[..., b.long()]) * torch.polar(torch.ones_like(angle), angle)
    out = x.clone()
    out[..., a.long()], out[..., b.long()] = z.real, z.imag
    return out


CASES = {  # attn_cfg beyond num_heads=4 (d_model 32: head_dim 8)
    "plain": {},
    "grouped_query": {"num_heads_kv": 2},
    "multi_query": {"num_heads_kv": 1},
    "rope": {"rotary_emb_dim": 8},
    "rope_interleaved_partial": {"rotary_emb_dim": 4, "rotary_emb_interleaved": True, "rotary_emb_base": 100.0},
    "absolute": {"max_position_embeddings": 16},
    "head_dim_scale_no_bias": {"head_dim": 6, "softmax_scale": 0.3, "qkv_proj_bias": False, "out_proj_bias": False,
                               "num_heads_kv": 2, "rotary_emb_dim": 6},
}


@torch.no_grad()
@pytest.mark.parametrize("name", CASES)
def test_mixer_equals_attention_written_out(name):
    cfg = {"num_heads": 4, **CASES[name]}
    torch.manual_seed(0)
    mixer = AttentionMixer(_config(**cfg), 0).double()
    with torch.no_grad():
        if mixer.in_proj.bias is not None:
            mixer.in_proj.bias.normal_()  # zero at init: make the biases count
    hidden = torch.randn(2, 11, 32, dtype=F64)
    H, Hkv = 4, cfg.get("num_heads_kv", 4)
    hd = cfg.get("head_dim", 8)
    positions = torch.arange(11).expand(2, -1)  # (b, l)
    x = hidden + (mixer.pos_emb.weight[:11] if "max_position_embeddings" in cfg else 0)  # (b, l, d_model)
    qkv = x @ mixer.in_proj.weight.T + (mixer.in_proj.bias if mixer.in_proj.bias is not None else 0)
    q = qkv[..., :H * hd].reshape(2, 11, H, hd)
    k = qkv[..., H * hd:(H + Hkv) * hd].reshape(2, 11, Hkv, hd)
    v = qkv[..., (H + Hkv) * hd:].reshape(2, 11, Hkv, hd)
    r, base, inter = cfg.get("rotary_emb_dim", 0), cfg.get("rotary_emb_base", 10000.0), cfg.get(
        "rotary_emb_interleaved", False)
    q, k = _rope_by_complex_numbers(q, positions, r, base, inter), _rope_by_complex_numbers(k, positions, r, base, inter)
    y = attention_reference(q, k, v, softmax_scale=cfg.get("softmax_scale"))  # (b, l, H, hd)
    expected = y.flatten(-2) @ mixer.out_proj.weight.T + (mixer.out_proj.bias if mixer.out_proj.bias is not None else 0)
    assert (mixer(hidden) - expected).abs().max() < 1e-12
    # the official names and shapes: q, then every key, then every value in one in_proj
    assert tuple(mixer.in_proj.weight.shape) == ((H + 2 * Hkv) * hd, 32)
    assert tuple(mixer.out_proj.weight.shape) == (32, H * hd)


def test_rotary_scores_depend_on_the_distance_only():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, dtype=F64), torch.randn(1, 1, 1, 8, dtype=F64)
    for interleaved in (False, True):
        def score(t, s):
            return float((rotary(q, torch.tensor([[t]]), 8, 10000.0, interleaved)
                          * rotary(k, torch.tensor([[s]]), 8, 10000.0, interleaved)).sum())
        assert abs(score(7, 3) - score(104, 100)) < 1e-12 and abs(score(7, 3) - score(3, 7)) > 1e-3


# ---- the cache: prefill + step = the full forward, for the Transformer and both hybrids ----------

MODELS = {
    "transformer_rope_gqa": dict(num_heads_kv=2, rotary_emb_dim=8),
    "transformer_absolute": dict(max_position_embeddings=32, d_intermediate=0),
    "hybrid_mamba1": dict(n_layer=3, attn_layer_idx=[1], rotary_emb_dim=4),
}


@torch.no_grad()
@pytest.mark.parametrize("name", MODELS)
def test_prefill_then_step_equals_the_full_forward_at_every_split(name):
    model = _model(**MODELS[name])
    ids = _ids()
    full = model(ids)
    for k in range(ids.shape[1] + 1):
        assert (prefill_then_step(model, ids, k) - full).abs().max() < 1e-12, k
    cache = model.allocate_inference_cache(2)  # continuations of several tokens, then a step
    parts = [model(ids[:, a:b], cache=cache) for a, b in ((0, 3), (3, 4), (4, 9))] + [model.step(ids[:, 9:10], cache)]
    assert (torch.cat(parts, 1) - full[:, :10]).abs().max() < 1e-12


@torch.no_grad()
def test_hybrid_with_mamba2_has_one_mixed_cache():
    torch.manual_seed(0)
    config = mm.MambaConfig(d_model=32, n_layer=3, vocab_size=VOCAB, ssm_cfg={"layer": "Mamba2"}, headdim=8,
                            d_state=8, chunk_size=4, attn_layer_idx=[2], attn_cfg={"num_heads": 2, "rotary_emb_dim": 8})
    model = mm.MambaLM(config).double().eval()
    cache = model.allocate_inference_cache(2)
    assert [sorted(layer) for layer in cache.layers] == [["conv_state", "ssm_state"]] * 2 + [["key", "key_mask", "value"]]
    ids = _ids(l=9)
    full = model(ids)
    for k in range(10):
        assert (prefill_then_step(model, ids, k) - full).abs().max() < 1e-12, k
    model(ids, cache=cache)  # the keys grow with the tokens; the SSM states do not
    assert cache.layers[2]["key"].shape == (2, 9, 2, 16) and cache.layers[0]["ssm_state"].shape == (2, 8, 8, 8)


@torch.no_grad()
def test_generate_greedy_is_the_argmax_of_the_full_forward():
    model = _model(n_layer=3, attn_layer_idx=[0, 2], rotary_emb_dim=8)
    out = mm.generate(model, _ids(l=5), max_new_tokens=6, temperature=0.0)
    for t in range(5, 11):
        assert torch.equal(out[:, t], model(out[:, :t])[:, -1, :VOCAB].argmax(-1))


@torch.no_grad()
def test_reset_then_reuse_forgets_the_old_keys():
    model = _model(rotary_emb_dim=8, max_position_embeddings=32)
    cache = model.allocate_inference_cache(2)
    model(_ids(l=10, seed=5), cache=cache)  # a long first prompt
    cache.reset()  # zeroes in place: 10 stale (zero) keys stay, but seqlen_offset = 0 says none is valid
    ids = _ids(l=4, seed=6)
    again = torch.cat([model(ids[:, :3], cache=cache), model.step(ids[:, 3:], cache)], dim=1)
    assert (again - model(ids)).abs().max() < 1e-12 and cache.layers[0]["key"].shape[1] == 4


@torch.no_grad()
def test_a_cache_with_fewer_keys_than_its_offset_is_refused():
    model = _model()
    cache = model.allocate_inference_cache(2)
    model(_ids(l=3), cache=cache)
    cache.seqlen_offset = 5
    expect_error(lambda: model.step(_ids(l=1), cache), ValueError, "holds 3 keys", "seqlen_offset is 5")


# ---- left padding: each row gets what it gets alone ----------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("kw", [dict(rotary_emb_dim=8, num_heads_kv=2), dict(max_position_embeddings=16),
                                dict(n_layer=3, attn_layer_idx=[1], rotary_emb_dim=4)],
                         ids=["rope", "absolute", "hybrid"])
def test_left_padded_rows_equal_the_rows_alone(kw):
    model = _model(**kw)
    ids = _ids(b=3, l=10)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :1] = 0
    logits = model(ids, attention_mask=mask)
    assert torch.isfinite(logits).all()  # padded queries read themselves: no NaN anywhere
    for row, pad in ((0, 4), (1, 0), (2, 1)):
        alone = model(ids[row:row + 1, pad:])
        assert (logits[row, pad:] - alone[0]).abs().max() < 1e-12, row
    out = mm.generate(model, ids, max_new_tokens=4, temperature=0.0, attention_mask=mask)
    assert torch.equal(out[0, 10:], mm.generate(model, ids[:1, 4:], max_new_tokens=4, temperature=0.0)[0, 6:])


@torch.no_grad()
def test_a_left_padded_continuation_skips_its_padding():
    model = _model(n_layer=3, attn_layer_idx=[0, 2], rotary_emb_dim=8, max_position_embeddings=16)
    ids = _ids(b=1, l=10)
    full = model(ids)
    cache = model.allocate_inference_cache(1)
    model(ids[:, :5], cache=cache)
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), ids[:, 5:9]], dim=1)  # two padding steps
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    out = model(padded, cache=cache, attention_mask=mask)[:, 2:]
    out = torch.cat([out, model.step(ids[:, 9:], cache)], dim=1)  # positions 5 .. 9, padding not counted
    assert (out - full[:, 5:]).abs().max() < 1e-12


# ---- positions beyond the table, precision -------------------------------------------------------

@torch.no_grad()
def test_a_position_beyond_the_absolute_table_is_refused():
    model = _model(max_position_embeddings=6)
    model(_ids(l=6))  # positions 0 .. 5 fit
    expect_error(lambda: model(_ids(l=7)), ValueError, "position 6", "max_position_embeddings=6")
    cache = model.allocate_inference_cache(2)
    model(_ids(l=6), cache=cache)
    expect_error(lambda: model.step(_ids(l=1), cache), ValueError, "position 6", "attention layer 0")


@torch.no_grad()
def test_half_precision_keeps_softmax_and_cache_in_float32():
    ref = _model(torch.float32, rotary_emb_dim=8, n_layer=3, attn_layer_idx=[1])
    half = _model(torch.bfloat16, rotary_emb_dim=8, n_layer=3, attn_layer_idx=[1])
    assert half.layer_compute_dtypes() == [torch.float32] * 3
    cache = half.allocate_inference_cache(2)
    assert cache.layers[1]["key"].dtype == torch.float32 and cache.layers[1]["key_mask"].dtype == torch.bool
    ids = _ids()
    out = half(ids, cache=cache)
    assert out.dtype == torch.bfloat16 and cache.layers[1]["key"].dtype == torch.float32
    assert (out.float() - ref(ids)).abs().max() < 0.1  # bf16 weights and projections: about 1e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(ref(ids)).all()
    expect_error(lambda: _model(F64)(ids, cache=_model(torch.float32).allocate_inference_cache(2)), ValueError,
                 "torch.float32 states", "torch.float64")


@torch.no_grad()
def test_the_transformer_block_is_pre_norm_attention_then_mlp():
    model = _model(n_layer=1, attn_layer_idx=[0])
    block, x = model.backbone.layers[0], torch.randn(2, 5, 32, dtype=F64)
    h = x + block.mixer(block.norm(x))
    assert (block(x) - (h + block.mlp(block.norm2(h)))).abs().max() < 1e-12


# ---- configs: round trips and clear errors -------------------------------------------------------

ROUND_TRIP = {
    "transformer": dict(d_model=32, n_layer=2, vocab_size=VOCAB, attn_layer_idx=[0, 1], d_intermediate=64,
                        attn_cfg={"num_heads": 4, "rotary_emb_dim": 8, "causal": True}),
    "mamba": dict(d_model=32, n_layer=2, vocab_size=VOCAB, d_state=4),
    "hybrid": dict(d_model=32, n_layer=3, vocab_size=VOCAB, ssm_cfg={"layer": "Mamba2"}, headdim=16, d_state=8,
                   attn_layer_idx=[1], attn_cfg={"num_heads": 2, "num_heads_kv": 1, "max_position_embeddings": 64}),
}


@torch.no_grad()
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_configs_round_trip_through_config_json(name, tmp_path):
    config = mm.MambaConfig(**ROUND_TRIP[name])
    again = mm.MambaConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    torch.manual_seed(0)
    model = mm.MambaLM(config).eval()
    kinds = [type(layer.mixer).__name__ for layer in model.backbone.layers]
    assert ("AttentionMixer" in kinds) == (name != "mamba")
    folder = tasks.save_task_model(model, tmp_path / name)  # our own layout: config.json + safetensors
    back, _ = tasks.load_task_model(folder)
    assert back.config == config and torch.equal(back(_ids()), model(_ids()))
    if name != "mamba":  # the official and Hugging Face loaders read no attention layers: refused by name
        expect_error(lambda: mm.save_pretrained(model, tmp_path / "x", layout="official"), ValueError,
                     "AttentionMixer", "save_task_model")


BAD_ATTN = [
    (dict(attn_cfg={"num_heads": 4, "mlp_dim": 64}), ["attn_cfg['mlp_dim']", "d_intermediate", "64"]),
    (dict(attn_cfg={"num_heads": 4, "d_conv": 4}), ["attn_cfg['d_conv']", "not supported"]),
    (dict(attn_cfg={"num_heads": 4, "causal": False}), ["attn_cfg['causal']", "causal", "False"]),
    (dict(attn_cfg={"num_heads": 0}), ["attn_cfg['num_heads']", "positive int", "0"]),
    (dict(attn_cfg={"num_heads": 3}), ["num_heads=3", "d_model=32", "head_dim"]),
    (dict(attn_cfg={"num_heads": 4, "num_heads_kv": 3}), ["num_heads_kv=3", "divide num_heads=4"]),
    (dict(attn_cfg={"num_heads": 4, "rotary_emb_dim": 5}), ["rotary_emb_dim", "even", "5"]),
    (dict(attn_cfg={"num_heads": 4, "rotary_emb_dim": 16}), ["rotary_emb_dim=16", "head_dim=8"]),
    (dict(attn_cfg={"num_heads": 4, "max_position_embeddings": -1}), ["max_position_embeddings", ">= 0", "-1"]),
    (dict(attn_cfg={"num_heads": 4, "softmax_scale": 0}), ["softmax_scale", "positive"]),
    (dict(attn_cfg={"num_heads": 4}, attn_layer_idx=[2]), ["attn_layer_idx", "[2]", "n_layer=2"]),
    (dict(attn_cfg={"num_heads": 4}, attn_layer_idx=[0, 0]), ["attn_layer_idx", "repeats"]),
]


@pytest.mark.parametrize("kw, words", BAD_ATTN, ids=[str(i) for i in range(len(BAD_ATTN))])
def test_bad_attention_configs_raise_clear_errors(kw, words):
    expect_error(lambda: mm.MambaConfig(**{**dict(d_model=32, n_layer=2, vocab_size=VOCAB, attn_layer_idx=[0]),
                                           **kw}), ValueError, *words)


def test_num_heads_is_required_where_attention_is_built():
    config = mm.MambaConfig(d_model=32, n_layer=2, vocab_size=VOCAB, attn_layer_idx=[1])  # a valid config
    expect_error(lambda: mm.MambaLM(config), ValueError, "attention layer 1", "attn_cfg['num_heads']")
