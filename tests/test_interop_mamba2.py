"""Mamba-2 checkpoints (``interop/layouts2.py`` through ``load_pretrained`` / ``save_pretrained``).

The outside reference is transformers' ``Mamba2ForCausalLM`` (pinned in constraints.txt; on the
CPU its pure-PyTorch path): the same random weights must give the same logits (relative error
<= 1e-5 in float32), the same 32 greedy tokens and the same cached-decoding logits
(``assert_same_model``), for ``ngroups`` 1 and 2 and a length (11) that is no multiple of
``chunk_size`` (4, 8). Hugging Face folders are written by transformers' own ``save_pretrained``;
official folders by hand (``config.json`` + ``torch.save`` of a state dict). Every refusal is
asserted with its message. Nothing touches the network.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from checkpoint_helpers import (assert_same_model, edit_config, load_error, official_state, perturb_,
                                random_ids, write_official)
from helpers import expect_error
from safetensors.torch import load_file
from transformers import Mamba2Config, Mamba2ForCausalLM

import minimamba_core as mm
from minimamba_core.interop import layouts2

pytestmark = pytest.mark.usefixtures("one_thread", "offline")  # tests/conftest.py

# Tiny Mamba2ForCausalLM configs: d_inner 64 = 4 heads of 16; written with every geometry key,
# since a key left out would take transformers' (Codestral's) default.
HF2 = {
    "g1_tied": dict(vocab_size=48, hidden_size=32, num_hidden_layers=2, num_heads=4, head_dim=16, state_size=8,
                    n_groups=1, chunk_size=4, tie_word_embeddings=True),
    "g2_untied_bias_k3_eps": dict(vocab_size=37, hidden_size=32, num_hidden_layers=2, num_heads=4, head_dim=16,
                                  state_size=16, n_groups=2, chunk_size=8, conv_kernel=3, use_bias=True,
                                  tie_word_embeddings=False, layer_norm_epsilon=1e-6),
}


def hf2_model(seed: int = 0, **kwargs) -> Mamba2ForCausalLM:
    torch.manual_seed(seed)
    model = Mamba2ForCausalLM(Mamba2Config(**kwargs))
    perturb_(model, seed)
    model.generation_config.eos_token_id = None
    return model.eval()


def our2_model(seed: int = 0, **kwargs) -> mm.MambaLM:
    """A perturbed Mamba-2 ``MambaLM``: ``d_model`` 32, 2 layers, 4 heads of 16, ``d_state`` 8."""
    torch.manual_seed(seed)
    cfg = dict(d_model=32, n_layer=2, vocab_size=45, headdim=16, d_state=8, chunk_size=4, ssm_cfg={"layer": "Mamba2"})
    model = mm.MambaLM(mm.MambaConfig(**{**cfg, **kwargs}))
    perturb_(model, seed)
    return model.eval()


def official2_config(**ssm) -> dict:
    """A released-style ``state-spaces/mamba2-*`` config.json for ``HF2["g1_tied"]``'s weights (45 tokens, 48 rows)."""
    return {"d_model": 32, "d_intermediate": 0, "n_layer": 2, "vocab_size": 45,
            "ssm_cfg": {"layer": "Mamba2", "headdim": 16, "d_state": 8, "chunk_size": 4, **ssm}, "attn_layer_idx": [],
            "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
            "pad_vocab_size_multiple": 16, "tie_embeddings": True}


@pytest.fixture
def hf2_folder(tmp_path):
    hf2_model(seed=3, **HF2["g1_tied"]).save_pretrained(tmp_path / "hf2")
    return tmp_path / "hf2"


# ---------------------------------------------------------------------------------------------
# transformers -> us, official -> us, us -> both
# ---------------------------------------------------------------------------------------------

def test_transformers_defaults_are_codestrals():
    """``HF2_DEFAULTS`` is what ``transformers.Mamba2Config()`` gives (the source of every key left out)."""
    default = Mamba2Config()
    assert {k: getattr(default, k) for k in layouts2.HF2_DEFAULTS} == {
        k: (list(v) if isinstance(getattr(default, k), list) else v) for k, v in layouts2.HF2_DEFAULTS.items()}
    assert (default.n_groups, default.vocab_size, default.tie_word_embeddings) == (8, 32768, False)


@pytest.mark.parametrize("name", list(HF2))
@pytest.mark.parametrize("shard", [None, "4KB"])
def test_transformers_to_us(name, shard, tmp_path):
    hf = hf2_model(seed=1, **HF2[name])
    hf.save_pretrained(tmp_path / "ck", **({"max_shard_size": shard} if shard else {}))
    assert (tmp_path / "ck" / "model.safetensors.index.json").is_file() == bool(shard)
    ours = mm.load_pretrained(tmp_path / "ck")
    c, hc = ours.config, hf.config
    assert (c.layer, c.d_model, c.n_layer, c.nheads, c.headdim, c.ngroups, c.d_state, c.d_conv, c.chunk_size) == (
        "Mamba2", hc.hidden_size, hc.num_hidden_layers, hc.num_heads, hc.head_dim, hc.n_groups, hc.state_size,
        hc.conv_kernel, hc.chunk_size)
    assert (c.bias, c.rms_norm_eps, c.vocab_size, c.padded_vocab_size) == (
        hc.use_bias, hc.layer_norm_epsilon, hc.vocab_size, hc.vocab_size)
    assert (ours.lm_head.weight is ours.backbone.embedding.weight) == hc.tie_word_embeddings
    assert_same_model(ours, hf)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_official_folder_to_us(ngroups, tmp_path):
    """A hand-written official folder (45 tokens padded to 16 -> 48 rows) loads and equals transformers."""
    hf = hf2_model(seed=2, **{**HF2["g1_tied"], "n_groups": ngroups})
    ours = mm.load_pretrained(write_official(tmp_path / "o", official2_config(ngroups=ngroups), official_state(hf)))
    assert (ours.config.vocab_size, ours.config.padded_vocab_size, ours.config.ngroups) == (45, 48, ngroups)
    assert_same_model(ours, hf)


def test_released_config_takes_the_official_defaults(tmp_path):
    """``{"layer": "Mamba2"}`` alone: d_state 128, headdim 64, ngroups 1, d_conv 4, chunk_size 256
    (``Mamba2.__init__``, mamba_ssm commit 60dadf2), as state-spaces/mamba2-130m's config.json."""
    model = our2_model(seed=4, d_model=64, headdim=64, d_state=128, chunk_size=256, vocab_size=50,
                       pad_vocab_size_multiple=16)
    config = {**official2_config(), "d_model": 64, "vocab_size": 50, "ssm_cfg": {"layer": "Mamba2"}}
    back = mm.load_pretrained(write_official(tmp_path / "o", config, model.state_dict()))
    assert back.config == model.config
    ids = random_ids(50)
    assert torch.equal(back(ids), model(ids))


@pytest.mark.parametrize("layout", ["hf", "official"])
def test_save_and_load_back(layout, tmp_path):
    ours = our2_model(seed=5, ngroups=2, bias=True, dt_limit=(0.01, 5.0))
    folder = mm.save_pretrained(ours, tmp_path / layout, layout=layout)
    raw = json.loads((folder / "config.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    back = mm.load_pretrained(folder)
    assert back.config == ours.config
    ids = random_ids(45)
    assert torch.equal(back(ids), ours(ids))
    if layout == "official":
        assert raw["ssm_cfg"]["layer"] == "Mamba2" and raw["ssm_cfg"]["dt_limit"] == [0.01, 5.0]
        assert not {"dt_rank", "dt_init", "dt_scale"} & set(raw["ssm_cfg"])  # Mamba2 takes none of them
    else:
        assert raw["model_type"] == "mamba2" and raw["time_step_limit"] == [0.01, 5.0]


def test_official_layout_holds_what_transformers_cannot(tmp_path):
    """rmsnorm off, norm before the gate, D per channel, an MLP: official layout only, and back exactly."""
    ours = our2_model(seed=6, rmsnorm=False, D_has_hdim=True, d_intermediate=40)
    other = our2_model(seed=6, norm_before_gate=True, A_init_range=(2.0, 3.0))
    for i, model in enumerate((ours, other)):
        back = mm.load_pretrained(mm.save_pretrained(model, tmp_path / str(i), layout="official"))
        assert back.config == model.config
        assert torch.equal(back(random_ids(45)), model(random_ids(45)))


def test_default_dt_limit_is_left_out_and_infinity_is_written_as_each_reader_reads_it(tmp_path):
    ours = our2_model(seed=7)
    for layout, key in (("hf", "time_step_limit"), ("official", "dt_limit")):
        raw = json.loads((mm.save_pretrained(ours, tmp_path / layout, layout=layout) / "config.json").read_text())
        assert key not in raw and key not in raw.get("ssm_cfg", {})  # (0, inf): both readers' default
    half_open = our2_model(seed=7, dt_limit=(0.001, math.inf))
    folder = mm.save_pretrained(half_open, tmp_path / "h", layout="hf")
    assert json.loads((folder / "config.json").read_text())["time_step_limit"] == [0.001, {"__float__": "Infinity"}]
    assert Mamba2ForCausalLM.from_pretrained(folder).config.time_step_limit[1] == math.inf  # transformers' tag
    assert mm.load_pretrained(folder).config.dt_limit == (0.001, math.inf)
    folder = mm.save_pretrained(half_open, tmp_path / "o", layout="official")
    assert mm.load_pretrained(folder).config.dt_limit == (0.001, math.inf)


@pytest.mark.parametrize("kw", [dict(ngroups=1), dict(ngroups=2, tie_embeddings=False, rms_norm_eps=1e-6)])
def test_us_to_transformers(kw, tmp_path):
    ours = our2_model(seed=8, **kw)
    folder = mm.save_pretrained(ours, tmp_path / "ck", layout="hf")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert ("lm_head.weight" in load_file(folder / "model.safetensors")) != ours.config.tie_embeddings
    hf = Mamba2ForCausalLM.from_pretrained(folder).eval()
    assert (hf.config.n_groups, hf.config.num_heads, hf.config.vocab_size) == (kw["ngroups"], 4, 48)
    assert_same_model(ours, hf)


# ---------------------------------------------------------------------------------------------
# refusals, each naming the key and the fix
# ---------------------------------------------------------------------------------------------

def test_codestral_default_n_groups_is_refused_by_name(hf2_folder):
    """A config.json without ``n_groups`` means transformers' 8 (Codestral), not 1: the tensors
    (conv1d of d_inner + 2 * 1 * 8 = 80 channels) refuse it, naming n_groups and its value."""
    raw = json.loads((hf2_folder / "config.json").read_text())
    del raw["n_groups"]
    (hf2_folder / "config.json").write_text(json.dumps(raw))
    msg = load_error(hf2_folder)
    assert "n_groups=8 (left out of config.json: transformers' default)" in msg, msg
    assert "conv1d.weight has shape (80, 1, 4)" in msg and 'set "n_groups": 1' in msg, msg


def test_codestral_default_num_heads_is_refused_by_name(hf2_folder):
    raw = json.loads((hf2_folder / "config.json").read_text())
    del raw["num_heads"]  # 128 * 16 != 2 * 32
    (hf2_folder / "config.json").write_text(json.dumps(raw))
    msg = load_error(hf2_folder)
    assert "num_heads * head_dim = 128 * 16 must equal expand * hidden_size = 2 * 32" in msg, msg
    assert "['num_heads'] are left out" in msg and 'set "num_heads"' in msg, msg


@pytest.mark.parametrize("change, words", [
    (dict(state_size=16), ['n_groups=1 and state_size=16', 'set "state_size": 8']),
    (dict(num_heads=8, head_dim=8), ["num_heads=8 but backbone.layers.0.mixer.A_log has shape (4,)",
                                     'set "num_heads": 4 and "head_dim": 16']),
    (dict(expand=4, head_dim=32), ["expand=4, i.e. d_inner = 128", "out_proj.weight has shape (32, 64)",
                                   'set "expand": 2']),
    (dict(conv_kernel=3), ['conv_kernel=3 but backbone.layers.0.mixer.conv1d.weight', 'set "conv_kernel": 4']),
    (dict(hidden_act="gelu"), ["hidden_act is 'gelu'", '"hidden_act": "silu"']),
    (dict(rms_norm=False), ["rms_norm is False", "gated RMSNorm"]),
    (dict(use_bias=True), ["use_bias=true", 'set "use_bias": false']),
])
def test_hf_config_that_disagrees_with_the_tensors(hf2_folder, change, words):
    edit_config(hf2_folder, **change)
    expect_error(lambda: mm.load_pretrained(hf2_folder), mm.CheckpointError, *words)


@pytest.mark.parametrize("ssm, words", [
    (dict(headdim=8), ["ssm_cfg.headdim=8, i.e. nheads = d_inner / headdim = 8", "A_log has shape (4,)",
                       '"headdim": 16 inside "ssm_cfg"']),
    (dict(d_state=16), ["ssm_cfg.d_state=16", '"d_state": 8 inside "ssm_cfg"']),
    (dict(D_has_hdim=True), ["D_has_hdim=True but backbone.layers.0.mixer.D has shape (4,)",
                             '"D_has_hdim": false inside "ssm_cfg"']),
    (dict(rmsnorm=False), ["rmsnorm=False but the weights hold backbone.layers.0.mixer.norm.weight",
                           '"rmsnorm": true inside "ssm_cfg"']),
    (dict(dt_rank=4), ["ssm_cfg has key 'dt_rank' (a Mamba2 layer does not take it)", "remove it"]),
    (dict(d_ssm=32), ["ssm_cfg has key 'd_ssm' (only null is supported)"]),
])
def test_official_config_that_disagrees_with_the_tensors(tmp_path, ssm, words):
    state = official_state(hf2_model(seed=9, **HF2["g1_tied"]))
    folder = write_official(tmp_path / "o", official2_config(**ssm), state)
    expect_error(lambda: mm.load_pretrained(folder), mm.CheckpointError, *words)


def test_mamba1_weights_with_a_mamba2_config_name_the_generation(tmp_path):
    from checkpoint_helpers import hf_model  # transformers' Mamba-1

    mamba1 = hf_model(seed=10, vocab_size=48, hidden_size=32, num_hidden_layers=2)
    folder = write_official(tmp_path / "o", official2_config(), official_state(mamba1))
    msg = load_error(folder)
    assert "the weights are a Mamba-1 model's (backbone.layers.0.mixer.A_log has shape (64, 16)" in msg, msg
    assert "ssm_cfg.layer 'Mamba2'" in msg and 'set "layer": "Mamba1" inside "ssm_cfg"' in msg, msg
    assert "missing key" not in msg
    mamba1.save_pretrained(tmp_path / "hf")
    edit_config(tmp_path / "hf", model_type="mamba2")
    msg = load_error(tmp_path / "hf")
    assert "the weights are a Mamba-1 model's" in msg and 'set "model_type": "mamba"' in msg, msg


def test_mamba2_weights_with_a_mamba1_config_name_the_generation(tmp_path, hf2_folder):
    edit_config(hf2_folder, model_type="mamba")
    msg = load_error(hf2_folder)
    assert "the weights are a Mamba-2 model's (backbone.layers.0.mixer.A_log has shape (4,)" in msg, msg
    assert "model_type 'mamba'" in msg and 'set "model_type": "mamba2"' in msg and "missing key" not in msg, msg
    config = official2_config()
    config["ssm_cfg"] = {}
    folder = write_official(tmp_path / "o", config, official_state(hf2_model(seed=11, **HF2["g1_tied"])))
    expect_error(lambda: mm.load_pretrained(folder), mm.CheckpointError, "the weights are a Mamba-2 model's",
                 "ssm_cfg.layer 'Mamba1'", 'set "layer": "Mamba2" inside "ssm_cfg"')


def test_other_model_types_stay_refused(hf2_folder):
    edit_config(hf2_folder, model_type="mamba3")
    expect_error(lambda: mm.load_pretrained(hf2_folder), mm.CheckpointError, "model_type is 'mamba3'",
                 "only Mamba-1 ('mamba') and Mamba-2 ('mamba2')")


@pytest.mark.parametrize("kw, field", [(dict(rmsnorm=False), "rmsnorm=False"),
                                       (dict(norm_before_gate=True), "norm_before_gate=True"),
                                       (dict(D_has_hdim=True), "D_has_hdim=True"),
                                       (dict(d_intermediate=40), "d_intermediate=40")])
def test_hf_layout_refuses_what_transformers_cannot_hold(kw, field, tmp_path):
    expect_error(lambda: mm.save_pretrained(our2_model(**kw), tmp_path / "ck", layout="hf"), ValueError,
                 field, "layout='official'")
    assert not (tmp_path / "ck").exists()


def test_mixed_mixer_kinds_are_refused(tmp_path):
    model = our2_model()
    mamba1 = mm.MambaLM(mm.MambaConfig(d_model=32, n_layer=2, vocab_size=45, d_state=8))
    model.backbone.layers[1].mixer = mamba1.backbone.layers[1].mixer
    expect_error(lambda: mm.save_pretrained(model, tmp_path / "ck"), ValueError,
                 "['Mamba2Mixer', 'MambaMixer']", "all MambaMixer or all Mamba2Mixer")


def test_an_unusable_device_is_refused_before_reading(tmp_path):
    from helpers import expect_error
    if not torch.cuda.is_available():
        expect_error(lambda: mm.load_pretrained(tmp_path, device="cuda"), ValueError, "'cuda'", "mm.pick_device()")
    expect_error(lambda: mm.load_pretrained(tmp_path, device="meta"), ValueError, "'meta'")
    expect_error(lambda: mm.load_pretrained(tmp_path, device="gpu0"), ValueError, "device must be a device name")


def test_a_missing_tied_head_names_tie_word_embeddings(hf2_folder):
    # transformers' Mamba2Config leaves the head untied when the key is missing (Codestral's default)
    raw = json.loads((hf2_folder / "config.json").read_text())
    del raw["tie_word_embeddings"]
    (hf2_folder / "config.json").write_text(json.dumps(raw))
    message = load_error(hf2_folder)
    assert "'lm_head.weight'" in message and '"tie_word_embeddings": true' in message
