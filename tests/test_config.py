"""MambaConfig: derived fields, JSON round trip, and ValueError naming the bad field."""

import json

import pytest

import minimamba_core as mm


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
