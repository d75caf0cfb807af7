"""``config.json`` of both layouts <-> ``MambaConfig``, and the config against the tensors
(``minimamba_core/interop/layouts.py``).

Every disagreement between a folder's ``config.json`` and its tensors, and every file that is not
a Mamba config, has a test that asserts the ``CheckpointError`` and its message: it names the
key and the fix. Folders are written by transformers and damaged here, or written by hand in
the official layout; the translation functions are also checked on their own, without files.
Nothing touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoint_helpers import (HF_CONFIGS, edit_config, edit_tensors, hf_model, load_error, official_state,
                                random_ids, write_official)
from helpers import tiny_lm
from transformers import MambaForCausalLM

import minimamba_core as mm
from minimamba_core.interop import layouts

pytestmark = pytest.mark.usefixtures("one_thread", "offline")  # tests/conftest.py


# ---------------------------------------------------------------------------------------------
# bad checkpoints: each one explained, naming the key and the fix
# ---------------------------------------------------------------------------------------------

def test_missing_key(hf_folder):
    edit_tensors(hf_folder, lambda t: t.pop("backbone.layers.1.mixer.D"))
    msg = load_error(hf_folder)
    assert "missing key 'backbone.layers.1.mixer.D' (expected shape (32,))" in msg
    assert "hf layout, model.safetensors" in msg


def test_unexpected_key(hf_folder):
    edit_tensors(hf_folder, lambda t: t.update({"backbone.layers.0.mixer.extra": torch.zeros(3)}))
    assert "unexpected key 'backbone.layers.0.mixer.extra'" in load_error(hf_folder)


def test_wrong_shape(hf_folder):
    edit_tensors(hf_folder, lambda t: t.update({"backbone.layers.0.mixer.D": torch.zeros(5)}))
    msg = load_error(hf_folder)
    assert "'backbone.layers.0.mixer.D' has shape (5,) in the file but the config gives (32,)" in msg


def test_config_disagrees_with_tensors(hf_folder):
    edit_config(hf_folder, state_size=4, time_step_rank=3, num_hidden_layers=3)
    msg = load_error(hf_folder)
    assert 'config.json says num_hidden_layers=3 but the weights hold backbone.layers.0 ... ' \
           'backbone.layers.1: set "num_hidden_layers": 2' in msg
    assert 'state_size=4 but backbone.layers.0.mixer.A_log has shape (32, 16): set "state_size": 16' in msg
    assert 'time_step_rank=3 but backbone.layers.0.mixer.dt_proj.weight has shape (32, 1): ' \
           'set "time_step_rank": 1' in msg


def test_intermediate_size_decides_expand(tmp_path):
    """transformers' save says expand 2 beside intermediate_size == hidden_size: d_inner follows the latter."""
    hf = hf_model(seed=14, **HF_CONFIGS["intermediate_equals_hidden"])
    hf.save_pretrained(tmp_path / "ck")
    written = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert (written["hidden_size"], written["intermediate_size"], written["expand"]) == (32, 32, 2)
    ours = mm.load_pretrained(tmp_path / "ck")
    assert (ours.config.expand, ours.config.d_inner) == (1, 32)
    torch.testing.assert_close(ours.backbone.layers[1].mixer.in_proj.weight,
                               hf.backbone.layers[1].mixer.in_proj.weight, rtol=0, atol=0)
    # and back: our save writes intermediate_size = d_inner, which transformers reads as is
    mm.save_pretrained(ours, tmp_path / "again", layout="hf")
    again = MambaForCausalLM.from_pretrained(tmp_path / "again").eval()
    ids = random_ids(99)
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, hf(ids).logits, rtol=0, atol=0)


def test_intermediate_size_not_a_multiple_of_hidden_size(tmp_path):
    hf = hf_model(seed=15, vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1)
    hf.save_pretrained(tmp_path / "ck")  # transformers builds and saves d_inner = 24 = 1.5 * 16
    msg = load_error(tmp_path / "ck")
    assert "intermediate_size=24 is not a whole multiple of hidden_size=16" in msg
    assert "fix one of those two keys" in msg


def test_intermediate_size_disagrees_with_tensors(hf_folder):
    edit_config(hf_folder, intermediate_size=64)  # the tensors were written with d_inner = 32
    msg = load_error(hf_folder)
    assert ('config.json says intermediate_size=64 but backbone.layers.0.mixer.in_proj.weight has shape '
            '(64, 16): set "intermediate_size": 32') in msg


def test_bias_flag_disagrees_with_tensors(hf_folder):
    edit_config(hf_folder, use_bias=False)
    msg = load_error(hf_folder)
    assert 'config.json says use_bias=false but the weights hold backbone.layers.0.mixer.in_proj.bias: ' \
           'set "use_bias": true' in msg


def test_bias_decided_by_tensors_when_config_is_silent(tmp_path):
    hf = hf_model(seed=13, **HF_CONFIGS["odd_vocab_bias"])
    config = {"d_model": 16, "n_layer": 2, "vocab_size": 37, "pad_vocab_size_multiple": 1}  # no ssm_cfg
    ours = mm.load_pretrained(write_official(tmp_path / "o", config, official_state(hf)))
    assert ours.config.bias is True and ours.config.conv_bias is True
    state = official_state(hf)
    for key in [k for k in state if k.endswith("conv1d.bias")]:
        del state[key]
    config["ssm_cfg"] = {"conv_bias": True}
    msg = load_error(write_official(tmp_path / "o2", config, state))
    assert ('ssm_cfg.conv_bias=true but the weights hold no conv1d.bias tensors: '
            'set "conv_bias": false inside "ssm_cfg"') in msg


def _official_130m_like(tmp_path: Path, rows: int, config_vocab: int) -> Path:
    """A 1-layer model with mamba-130m's vocabulary numbers (50277 tokens, 50280 rows)."""
    hf = hf_model(seed=14, vocab_size=rows, hidden_size=4, num_hidden_layers=1)
    config = {"d_model": 4, "n_layer": 1, "vocab_size": config_vocab, "ssm_cfg": {}, "rms_norm": True,
              "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}
    return write_official(tmp_path / f"official_{rows}", config, official_state(hf))


def test_vocab_padding_mismatch_official(tmp_path):
    ok = mm.load_pretrained(_official_130m_like(tmp_path, rows=50280, config_vocab=50277))
    assert (ok.config.vocab_size, ok.config.padded_vocab_size) == (50277, 50280)
    msg = load_error(_official_130m_like(tmp_path, rows=50277, config_vocab=50277))
    assert ("config.json says vocab_size=50277 padded to a multiple of pad_vocab_size_multiple=8, i.e. 50280 "
            "rows, but backbone.embedding.weight has shape (50277, 4): "
            'set "pad_vocab_size_multiple": 1 (the rows are not padded)') in msg


def test_vocab_size_mismatch_hf(tmp_path):
    hf_model(seed=15, vocab_size=50280, hidden_size=4, num_hidden_layers=1).save_pretrained(tmp_path / "hf")
    edit_config(tmp_path / "hf", vocab_size=50277)
    msg = load_error(tmp_path / "hf")
    assert ("config.json says vocab_size=50277 but backbone.embeddings.weight has shape (50280, 4); a Hugging "
            'Face checkpoint stores exactly vocab_size rows (mamba-130m-hf: 50280): set "vocab_size": 50280') in msg


def test_hf_key_names_under_an_official_config(tmp_path):
    hf = hf_model(seed=16, **HF_CONFIGS["small"])
    config = {"d_model": 32, "n_layer": 2, "vocab_size": 64}
    msg = load_error(write_official(tmp_path / "o", config, dict(hf.state_dict())))
    assert "unexpected key 'backbone.embeddings.weight' (that is the Hugging Face name" in msg
    assert "missing key 'backbone.embedding.weight'" in msg


def test_not_a_checkpoint(tmp_path, hf_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no config.json" in load_error(empty)
    (empty / "config.json").write_text('{"hidden_size": 16, "num_hid')  # truncated JSON
    assert "is not valid JSON" in load_error(empty)
    (empty / "config.json").write_text('{"model_type": "gpt2", "n_embd": 16}')
    assert "model_type is 'gpt2'; only Mamba-1" in load_error(empty)
    (empty / "config.json").write_text('{"foo": 1}')
    assert "is not a Mamba config" in load_error(empty)
    (empty / "config.json").write_text('{"d_model": 16, "n_layer": 2, "vocab_size": 37, '
                                       '"ssm_cfg": {"layer": "Mamba3"}}')
    assert "ssm_cfg.layer is 'Mamba3'; only Mamba-1" in load_error(empty)
    (empty / "config.json").write_text('{"d_model": 16, "n_layer": 2, "vocab_size": 37}')
    assert "has a config.json but no weights: expected model.safetensors" in load_error(empty)
    with pytest.raises(mm.CheckpointError, match="is a file; pass the folder"):
        mm.load_pretrained(hf_folder / "config.json")




def test_hf_config_with_inconsistent_vocabulary_keys_is_refused(tmp_path):
    """Adversarial review (2026-11-29, fixed in ede8461): the two keys that keep the real vocabulary
    inside the padded rows must give the file's ``vocab_size``."""
    folder = mm.save_pretrained(tiny_lm(), tmp_path / "ck")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["minimamba_vocab_size"] = 40  # padded to 8 gives 40 rows, the file has 16
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(mm.CheckpointError, match="minimamba_vocab_size=40"):
        mm.load_pretrained(folder)


# ---------------------------------------------------------------------------------------------
# config.json <-> MambaConfig, without files
# ---------------------------------------------------------------------------------------------

CONFIGS = {
    "padded_vocab_dstate8_expand3_rank5": mm.MambaConfig(d_model=24, n_layer=3, vocab_size=45, d_state=8,
                                                         expand=3, dt_rank=5, d_conv=3),  # 48 rows
    "unpadded_bias_no_conv_bias_untied": mm.MambaConfig(d_model=16, n_layer=2, vocab_size=37, bias=True,
                                                        conv_bias=False, pad_vocab_size_multiple=1,
                                                        tie_embeddings=False),
    "mlp": mm.MambaConfig(d_model=16, n_layer=2, vocab_size=50, d_intermediate=40),  # official layout only
}
HERE = Path("config.json")  # where a message would say the file is


@pytest.mark.parametrize("name", list(CONFIGS))
def test_official_config_json_reads_back_as_the_same_config(name):
    config = CONFIGS[name]
    raw = json.loads(json.dumps(layouts.official_config_json(config)))
    assert layouts.detect_layout(raw, HERE) == "official"
    assert raw["ssm_cfg"]["layer"] == "Mamba1" and raw["d_intermediate"] == config.d_intermediate
    fields, explicit = layouts.fields_from_official(raw, HERE)
    assert mm.MambaConfig(**fields) == config
    assert explicit == {"bias": config.bias, "conv_bias": config.conv_bias}


@pytest.mark.parametrize("name", ["padded_vocab_dstate8_expand3_rank5", "unpadded_bias_no_conv_bias_untied"])
def test_hf_config_json_reads_back_as_the_same_config(name):
    config = CONFIGS[name]
    raw = json.loads(json.dumps(layouts.hf_config_json(config, torch.float32)))
    assert layouts.detect_layout(raw, HERE) == "hf"
    assert raw["vocab_size"] == config.padded_vocab_size  # every row, as transformers reads it
    assert raw["intermediate_size"] == config.d_inner
    fields, explicit = layouts.fields_from_hf(raw, HERE)
    assert mm.MambaConfig(**fields) == config
    assert explicit == {"bias": config.bias, "conv_bias": config.conv_bias}


def test_the_tensors_tell_the_config_they_were_made_with():
    config = CONFIGS["padded_vocab_dstate8_expand3_rank5"]
    with torch.device("meta"):  # names and shapes only
        state = mm.MambaLM(config).state_dict()
    inferred = layouts.infer_from_tensors(state)
    assert {k: value for k, (value, _) in inferred.items()} == dict(
        n_layer=3, d_model=24, rows=48, expand=3, d_conv=3, dt_rank=5, d_state=8, bias=False, conv_bias=True)
    fields, explicit = layouts.fields_from_official(layouts.official_config_json(config), HERE)
    assert layouts.compare_config(fields, explicit, inferred, "official") == []
    fields["d_state"] = 16  # the config.json of another model
    assert layouts.compare_config(fields, explicit, inferred, "official") == [
        'config.json says ssm_cfg.d_state=16 but backbone.layers.0.mixer.A_log has shape (72, 8): set '
        '"d_state": 8 inside "ssm_cfg" in config.json (or use the weights it was written for)']


def test_a_config_json_without_dt_rank_means_auto():
    """``dt_rank`` left out of ``config.json`` is ``"auto"``, ``ceil(d_model / 16)``: 2 for ``d_model``
    32. (The restructure read the default off a ``d_model = 1`` config, 1, and refused such folders.)"""
    with torch.device("meta"):
        state = mm.MambaLM(mm.MambaConfig(d_model=32, n_layer=1, vocab_size=8)).state_dict()
    for raw in ({"d_model": 32, "n_layer": 1, "vocab_size": 8}, {"d_model": 32, "n_layer": 1, "vocab_size": 8,
                                                               "ssm_cfg": {"dt_rank": "auto"}}):
        fields, explicit = layouts.fields_from_official(raw, HERE)
        assert layouts.compare_config(fields, explicit, layouts.infer_from_tensors(state), "official") == []
        assert mm.MambaConfig(**fields).dt_rank == 2


@pytest.mark.parametrize("key, value", [("intermediate_size", True), ("intermediate_size", "48"),
                                        ("intermediate_size", 0), ("hidden_size", -16)])
def test_intermediate_and_hidden_size_must_be_positive_ints(hf_folder, key, value):
    edit_config(hf_folder, **{key: value})
    msg = load_error(hf_folder)
    assert f"{key} must be a positive int, got {value!r}" in msg, msg


def test_a_wrong_hidden_size_is_named_alone_not_the_intermediate_size(tmp_path):
    """hidden_size 64 -> 32 in a transformers folder: the fix is hidden_size; intermediate_size (128)
    is right and must not be 'corrected' (a new user was told to set it to 64, then back to 128)."""
    hf_model(seed=16, vocab_size=72, hidden_size=64, num_hidden_layers=1).save_pretrained(tmp_path / "ck")
    edit_config(tmp_path / "ck", hidden_size=32)
    msg = load_error(tmp_path / "ck")
    assert 'set "hidden_size": 64' in msg
    assert "intermediate_size" not in msg, msg
