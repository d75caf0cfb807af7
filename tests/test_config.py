"""MambaConfig (``minimamba_core/config.py``): derived fields, JSON round trip, ValueError naming the
bad field, and the layer protocol (``ssm_cfg["layer"]`` and its defaults, ``d_intermediate``,
``attn_layer_idx``, ``attn_cfg``)."""

import json
from pathlib import Path

import pytest
from helpers import expect_error

import minimamba_core as mm
from minimamba_core.interop import layouts

VOCAB = 50


def test_derived_fields():
    cfg = mm.MambaConfig(d_model=768, n_layer=24, vocab_size=50277)
    assert cfg.d_inner == 1536  # expand 2 * d_model
    assert cfg.dt_rank == 48  # ceil(768 / 16)
    assert cfg.padded_vocab_size == 50280  # next multiple of 8
    assert mm.MambaConfig(d_model=100, n_layer=1, vocab_size=8).dt_rank == 7  # ceil(6.25), not 6
    assert mm.MambaConfig(d_model=8, n_layer=1, vocab_size=8, dt_rank=3).dt_rank == 3


def test_json_round_trip():
    cfg = mm.MambaConfig(d_model=64, n_layer=3, vocab_size=101, d_state=8, expand=3, bias=True)
    again = mm.MambaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert "d_inner" not in cfg.to_dict()


def test_unknown_key_is_rejected():
    with pytest.raises(ValueError, match=r"unknown MambaConfig field\(s\) \['d_modle'\]"):
        mm.MambaConfig.from_dict({"d_modle": 8, "n_layer": 1, "vocab_size": 4})


@pytest.mark.parametrize("kwargs,field", [
    (dict(d_model=0), "d_model"), (dict(n_layer=-1), "n_layer"), (dict(vocab_size=0), "vocab_size"),
    (dict(d_state=0), "d_state"), (dict(d_conv=0), "d_conv"), (dict(expand=0), "expand"),
    (dict(dt_rank=0), "dt_rank"), (dict(dt_rank="big"), "dt_rank"), (dict(dt_init="xavier"), "dt_init"),
    (dict(dt_min=0.2, dt_max=0.1), "dt_min"), (dict(dt_min=-1.0), "dt_min"),
    (dict(rms_norm_eps=0.0), "rms_norm_eps"), (dict(d_model=8.0), "d_model"), (dict(bias="no"), "bias"),
])
def test_nonsense_raises_value_error_naming_the_field(kwargs, field):
    base = dict(d_model=16, n_layer=2, vocab_size=10)
    base.update(kwargs)
    with pytest.raises(ValueError, match=rf"MambaConfig\.{field}"):
        mm.MambaConfig(**base)


# ---- bad input (issue 9): ValueError naming the field, what was expected and what was given --

CONFIG_CASES = [
    (dict(d_model=0), ["d_model", "positive int", "0"]),
    (dict(d_model=16.0), ["d_model", "positive int", "16.0"]),
    (dict(n_layer=-2), ["n_layer", "-2"]),
    (dict(vocab_size=True), ["vocab_size", "True"]),
    (dict(d_state=0), ["d_state", "0"]),
    (dict(d_conv=0), ["d_conv", "0"]),
    (dict(expand=1.5), ["expand", "1.5"]),
    (dict(dt_rank=0), ["dt_rank", "'auto'", "0"]),
    (dict(dt_rank="full"), ["dt_rank", "'full'"]),
    (dict(dt_init="xavier"), ["dt_init", "'random'", "'xavier'"]),
    (dict(dt_min=0.2, dt_max=0.1), ["dt_min", "dt_max", "0.2", "0.1"]),
    (dict(dt_min=-1e-3), ["dt_min", "positive", "-0.001"]),
    (dict(rms_norm_eps=0.0), ["rms_norm_eps", "0.0"]),
    (dict(tie_embeddings="yes"), ["tie_embeddings", "bool", "'yes'"]),
    (dict(pad_vocab_size_multiple=0), ["pad_vocab_size_multiple", "0"]),
]


@pytest.mark.parametrize("kw, words", CONFIG_CASES, ids=[next(iter(c[0])) + "=" + repr(list(c[0].values())[-1]) for c in CONFIG_CASES])
def test_config_rejects_nonsense(kw, words):
    base = dict(d_model=16, n_layer=2, vocab_size=VOCAB)
    base.update(kw)
    expect_error(lambda: mm.MambaConfig(**base), ValueError, *words)


def test_config_from_dict_rejects_unknown_keys():
    data = mm.MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=4).to_dict()
    data["d_modle"] = 16
    expect_error(lambda: mm.MambaConfig.from_dict(data), ValueError, "unknown", "d_modle")


# ---- the layer protocol: ssm_cfg["layer"] and its defaults ---------------------------------

def _config(**kw) -> mm.MambaConfig:
    return mm.MambaConfig(**{**dict(d_model=16, n_layer=2, vocab_size=VOCAB), **kw})


def test_each_layer_kind_has_its_defaults():
    """Mamba-1: d_state 16, vocabulary padded to 8 (mamba_simple.py); Mamba-2: 128 and 16
    (mamba2.py and the released Mamba-2 configs)."""
    m1 = _config()
    assert (m1.layer, m1.ssm_cfg, m1.d_state, m1.pad_vocab_size_multiple) == ("Mamba1", {"layer": "Mamba1"}, 16, 8)
    assert m1.padded_vocab_size == 56
    m2 = _config(ssm_cfg={"layer": "Mamba2", "headdim": 8})
    assert (m2.layer, m2.d_state, m2.pad_vocab_size_multiple, m2.padded_vocab_size) == ("Mamba2", 128, 16, 64)
    assert [m2.layer_kind(i) for i in range(2)] == ["Mamba2", "Mamba2"]


def test_an_explicit_value_wins_over_the_layer_default():
    assert _config(ssm_cfg={"layer": "Mamba2"}, headdim=8, d_state=64).d_state == 64
    assert _config(ssm_cfg={"layer": "Mamba2", "d_state": 32, "headdim": 8}).d_state == 32
    assert _config(ssm_cfg={"layer": "Mamba2"}, headdim=8, pad_vocab_size_multiple=1).padded_vocab_size == VOCAB
    assert _config(d_state=4).d_state == 4


def test_ssm_cfg_keys_merge_into_the_flat_fields():
    nested = _config(ssm_cfg=dict(d_state=8, d_conv=3, expand=3, dt_rank=5, conv_bias=False, bias=True,
                                  use_fast_path=True, layer_idx=None))  # the last two change nothing
    flat = _config(d_state=8, d_conv=3, expand=3, dt_rank=5, conv_bias=False, bias=True)
    assert nested == flat
    assert nested.ssm_cfg == {"layer": "Mamba1"}  # stored back as the layer alone
    assert _config(d_state=8, ssm_cfg={"d_state": 8}) == _config(d_state=8)  # the same value twice is fine


@pytest.mark.parametrize("kw", [
    dict(),
    dict(ssm_cfg={"layer": "Mamba2", "dt_limit": [0.0, 2.0]}, headdim=8, ngroups=2, d_intermediate=40),
    dict(ssm_cfg={"d_state": 8, "expand": 3}, attn_layer_idx=[1, 0], attn_cfg={"num_heads": 4, "causal": True}),
], ids=["mamba1", "mamba2_mlp", "hybrid"])
def test_to_dict_from_dict_round_trip_with_the_layer_protocol(kw):
    cfg = _config(**kw)
    again = mm.MambaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert {"ssm_cfg", "d_intermediate", "attn_layer_idx", "attn_cfg"} <= set(cfg.to_dict())
    assert cfg.attn_layer_idx == sorted(cfg.attn_layer_idx)


def test_attention_layers_are_named_by_index():
    cfg = _config(n_layer=4, attn_layer_idx=[3, 1], attn_cfg={"num_heads": 2})
    assert cfg.attn_layer_idx == [1, 3]
    assert [cfg.layer_kind(i) for i in range(4)] == ["Mamba1", "MHA", "Mamba1", "MHA"]


PROTOCOL_CASES = [
    # (what is wrong, keyword arguments, words the ValueError must contain)
    ("unknown ssm_cfg key", dict(ssm_cfg={"headdim": 64}), ["ssm_cfg", "key 'headdim'", "a Mamba1 layer does not take it", "'d_state'"]),
    ("flat and ssm_cfg disagree", dict(d_state=8, ssm_cfg={"d_state": 16}),
     ["MambaConfig.d_state=8", "ssm_cfg['d_state']=16", "disagree"]),
    ("ssm_cfg not a dict", dict(ssm_cfg="Mamba2"), ["ssm_cfg", "dict", "'Mamba2'"]),
    ("empty layer name", dict(ssm_cfg={"layer": ""}), ["ssm_cfg['layer']", "'Mamba1'", "''"]),
    ("layer not a str", dict(ssm_cfg={"layer": 2}), ["ssm_cfg['layer']", "2"]),
    ("unknown attn_cfg key", dict(attn_layer_idx=[0], attn_cfg={"heads": 4}),
     ["attn_cfg", "unknown key(s) ['heads']", "'num_heads'"]),
    ("attn_layer_idx too large", dict(attn_layer_idx=[2]), ["attn_layer_idx", "[2]", "n_layer=2"]),
    ("attn_layer_idx negative", dict(attn_layer_idx=[-1]), ["attn_layer_idx", "[-1]", "n_layer=2"]),
    ("attn_layer_idx repeated", dict(attn_layer_idx=[1, 1]), ["attn_layer_idx", "repeats", "[1, 1]"]),
    ("attn_layer_idx non-int", dict(attn_layer_idx=[0.5]), ["attn_layer_idx", "list of layer indices", "0.5"]),
    ("attn_layer_idx bool", dict(attn_layer_idx=[True]), ["attn_layer_idx", "True"]),
    ("attn_layer_idx an int", dict(attn_layer_idx=1), ["attn_layer_idx", "list of layer indices", "1"]),
    ("attn_cfg not a dict", dict(attn_layer_idx=[0], attn_cfg=["num_heads"]), ["attn_cfg", "dict"]),
    ("attn_cfg without attn_layer_idx", dict(attn_cfg={"num_heads": 4}), ["attn_cfg", "attn_layer_idx", "empty"]),
    ("negative d_intermediate", dict(d_intermediate=-1), ["d_intermediate", ">= 0", "-1"]),
    ("d_intermediate a float", dict(d_intermediate=40.0), ["d_intermediate", "40.0"]),
    ("d_intermediate a bool", dict(d_intermediate=True), ["d_intermediate", "True"]),
]


@pytest.mark.parametrize("case, kw, words", PROTOCOL_CASES, ids=[c[0] for c in PROTOCOL_CASES])
def test_layer_protocol_rejects_impossible_combinations(case, kw, words):
    expect_error(lambda: _config(**kw), ValueError, *words)


# mamba-130m's config.json as released (state-spaces/mamba-130m on the Hub)
MAMBA_130M = {"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
              "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}


def test_a_released_official_config_equals_the_flat_one():
    flat = mm.MambaConfig(d_model=768, n_layer=24, vocab_size=50277)
    # its keys that are fields (rms_norm and fused_add_norm describe the official kernels: RMSNorm
    # is the only norm here and the add+norm fusion is the same function)
    direct = mm.MambaConfig(**{k: v for k, v in MAMBA_130M.items() if k not in ("rms_norm", "fused_add_norm")})
    fields, _ = layouts.fields_from_official(MAMBA_130M, Path("config.json"))  # what load_pretrained reads
    for cfg in (direct, mm.MambaConfig(**fields)):
        assert cfg == flat
        assert (cfg.layer, cfg.d_state, cfg.d_inner, cfg.dt_rank, cfg.padded_vocab_size) == (
            "Mamba1", 16, 1536, 48, 50280)


def test_mamba2_fields_only_in_a_mamba2_configs_dict():
    assert not {"headdim", "ngroups", "chunk_size", "dt_limit"} & set(_config().to_dict())  # as before Mamba-2
    m2 = _config(ssm_cfg={"layer": "Mamba2"}, headdim=8, dt_limit=(0.0, 0.5))
    assert m2.to_dict()["headdim"] == 8 and m2.to_dict()["dt_limit"] == [0.0, 0.5]
    assert mm.MambaConfig.from_dict(json.loads(json.dumps(m2.to_dict()))) == m2
    assert m2.nheads == 4  # d_inner 32 / headdim 8
