"""Checkpoints (``minimamba_core/interop/checkpoint.py``): load and save both layouts.

The outside reference is transformers' ``MambaForCausalLM`` (pinned in constraints.txt): the
same random weights must give the same logits (relative error <= 1e-5 in float32), the same
32 greedy tokens and the same cached-decoding logits, in both directions
(transformers -> us, us -> transformers). Official-layout folders are written here by hand
(official key names, nested ``ssm_cfg``), independently of ``save_pretrained``. Every bad
checkpoint has a test that asserts the exception and its message (those where ``config.json``
disagrees with the tensors: ``test_interop_layouts.py``). Nothing touches the network. The
helpers are in ``checkpoint_helpers.py``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from checkpoint_helpers import (HF_CONFIGS, OUR_CONFIGS, REL_TOL, assert_same_model, hf_model, load_error,
                                official_state, our_model, random_ids, rel_err, write_official)
from helpers import tiny_lm
from safetensors.torch import load_file, save_file
from transformers import MambaForCausalLM

import minimamba_core as mm
from minimamba_core.interop import checkpoint as ckpt
from minimamba_core.training import tasks

pytestmark = pytest.mark.usefixtures("one_thread", "offline")  # tests/conftest.py


# ---------------------------------------------------------------------------------------------
# transformers -> us, us -> transformers, official layout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_transformers_to_us(name, tmp_path):
    hf = hf_model(seed=1, **HF_CONFIGS[name])
    hf.save_pretrained(tmp_path / "ck")
    ours = mm.load_pretrained(tmp_path / "ck")
    hc = hf.config
    assert (ours.config.d_model, ours.config.n_layer, ours.config.d_state, ours.config.d_conv,
            ours.config.d_inner, ours.config.dt_rank) == (hc.hidden_size, hc.num_hidden_layers, hc.state_size,
                                                          hc.conv_kernel, hc.intermediate_size, hc.time_step_rank)
    assert (ours.config.bias, ours.config.conv_bias) == (hc.use_bias, hc.use_conv_bias)
    assert ours.config.vocab_size == ours.config.padded_vocab_size == hc.vocab_size
    assert (ours.lm_head.weight is ours.backbone.embedding.weight) == hc.tie_word_embeddings
    assert not ours.training
    assert_same_model(ours, hf)


@pytest.mark.parametrize("name", list(OUR_CONFIGS))
def test_us_to_transformers(name, tmp_path):
    ours = our_model(seed=2, **OUR_CONFIGS[name])
    tok = mm.build_char_tokenizer("abcdefgh")
    mm.save_pretrained(ours, tmp_path / "ck", layout="hf", tokenizer=tok)
    assert sorted(os.listdir(tmp_path / "ck")) == ["config.json", "model.safetensors", "tokenizer.json"]
    hf = MambaForCausalLM.from_pretrained(tmp_path / "ck").eval()
    assert hf.config.vocab_size == ours.config.padded_vocab_size  # every row, as mamba-130m-hf (50280)
    assert (hf.config.use_bias, hf.config.use_conv_bias) == (ours.config.bias, ours.config.conv_bias)
    assert hf.config.layer_norm_epsilon == ours.config.rms_norm_eps
    assert_same_model(ours, hf)


OFFICIAL_CONFIGS = {
    # as released (mamba-130m style): empty ssm_cfg, vocab padded 45 -> 48
    "released_style": (dict(vocab_size=48, hidden_size=16, num_hidden_layers=2),
                       dict(d_model=16, n_layer=2, vocab_size=45, ssm_cfg={}, rms_norm=True,
                            residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)),
    # every ssm_cfg entry spelled out, plus keys that do not change the math
    "explicit_ssm_cfg": (dict(vocab_size=40, hidden_size=24, num_hidden_layers=2, state_size=8, expand=3,
                              time_step_rank=5, conv_kernel=3, use_bias=True),
                         dict(d_model=24, n_layer=2, vocab_size=40, d_intermediate=0,
                              ssm_cfg=dict(layer="Mamba1", d_state=8, d_conv=3, expand=3, dt_rank=5,
                                           bias=True, conv_bias=True, use_fast_path=True),
                              rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
                              pad_vocab_size_multiple=8, tie_embeddings=True, attn_layer_idx=[],
                              attn_cfg={})),
}


@pytest.mark.parametrize("name", list(OFFICIAL_CONFIGS))
def test_official_layout_loads_to_same_logits(name, tmp_path):
    hf_kwargs, official = OFFICIAL_CONFIGS[name]
    hf = hf_model(seed=3, **hf_kwargs)
    folder = write_official(tmp_path / "official", official, official_state(hf))
    ours = mm.load_pretrained(folder)
    assert ours.config.vocab_size == official["vocab_size"]
    assert ours.config.padded_vocab_size == hf_kwargs["vocab_size"]
    assert_same_model(ours, hf)


def test_save_official_layout_is_what_mamba_ssm_reads(tmp_path):
    ours = our_model(seed=4, **OUR_CONFIGS["padded_vocab_dstate8_expand3_rank5"])
    folder = mm.save_pretrained(ours, tmp_path / "off", layout="official")
    config = json.loads((folder / "config.json").read_text())
    # the fields of mamba_ssm's MambaConfig (state-spaces/mamba 60dadf2, models/config_mamba.py)
    assert set(config) == {"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx",
                           "attn_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm",
                           "pad_vocab_size_multiple", "tie_embeddings"}
    assert (config["vocab_size"], config["pad_vocab_size_multiple"]) == (45, 8)
    assert config["ssm_cfg"]["d_state"] == 8 and config["ssm_cfg"]["dt_rank"] == 5
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert set(state) == set(ours.state_dict())  # official names, lm_head included
    assert state["lm_head.weight"].data_ptr() == state["backbone.embedding.weight"].data_ptr()  # stored once
    assert state["backbone.embedding.weight"].shape == (48, 24)
    back = mm.load_pretrained(folder)
    ids = random_ids(45)
    with torch.no_grad():
        assert torch.equal(back(ids), ours(ids))
    assert back.lm_head.weight is back.backbone.embedding.weight


def test_hf_sharded_safetensors_and_bin(tmp_path):
    hf = hf_model(seed=5, **HF_CONFIGS["odd_vocab_bias"])
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="4KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text(hf.config.to_json_string())
    torch.save(hf.state_dict(), bin_dir / "pytorch_model.bin")
    ids = random_ids(37)
    with torch.no_grad():
        reference = hf(ids).logits
        for folder in ("sharded", "bin"):
            assert rel_err(mm.load_pretrained(tmp_path / folder)(ids), reference) <= REL_TOL


def test_dtype_and_device_are_honoured(tmp_path):
    ours = our_model(seed=6, **OUR_CONFIGS["small"])
    folder = mm.save_pretrained(ours, tmp_path / "ck")
    m64 = mm.load_pretrained(folder, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in m64.parameters()} == {torch.float64}
    assert {p.device.type for p in m64.parameters()} == {"cpu"}
    bf16 = mm.load_pretrained(str(folder), dtype=torch.bfloat16)
    kept = {n for n, _ in bf16.named_parameters() if n.endswith((".A_log", ".D"))}   # float32, as model.to(bf16)
    assert {p.dtype for n, p in bf16.named_parameters() if n not in kept} == {torch.bfloat16}
    assert kept and {p.dtype for n, p in bf16.named_parameters() if n in kept} == {torch.float32}
    assert bf16.lm_head.weight is bf16.backbone.embedding.weight  # still tied after the cast
    ids = random_ids(64)
    with torch.no_grad():
        assert rel_err(m64(ids), ours(ids)) <= 1e-6
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        mm.load_pretrained(folder, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# atomic saving
# ---------------------------------------------------------------------------------------------

def _crashing_writer(tensors, filename, metadata=None):
    with open(filename, "wb") as f:  # half a file, then the "disk" fails
        f.write(b"\x00" * 64)
    raise OSError("disk full (simulated)")


def test_crash_mid_save_leaves_no_folder(tmp_path, monkeypatch):
    ours = our_model(seed=7, **OUR_CONFIGS["small"])
    monkeypatch.setattr(ckpt, "save_file", _crashing_writer)
    with pytest.raises(OSError, match="disk full"):
        mm.save_pretrained(ours, tmp_path / "ck", tokenizer=mm.build_char_tokenizer("ab"))
    assert os.listdir(tmp_path) == []  # neither the target nor a temporary folder is left
    with pytest.raises(mm.CheckpointError, match="no folder"):
        mm.load_pretrained(tmp_path / "ck")


def test_crash_while_replacing_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    old = our_model(seed=8, **OUR_CONFIGS["small"])
    folder = mm.save_pretrained(old, tmp_path / "ck", layout="official")
    new = our_model(seed=9, **OUR_CONFIGS["small"])

    def crashing_torch_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 truncated")
        raise OSError("killed mid-save (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", crashing_torch_save)
        with pytest.raises(OSError, match="killed"):
            mm.save_pretrained(new, folder, layout="official")
    assert os.listdir(tmp_path) == ["ck"]
    ids = random_ids(64)
    with torch.no_grad():
        assert torch.equal(mm.load_pretrained(folder)(ids), old(ids))
    mm.save_pretrained(new, folder, layout="hf")  # a successful replace swaps in the new layout
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    assert os.listdir(tmp_path) == ["ck"]
    with torch.no_grad():
        assert torch.equal(mm.load_pretrained(folder)(ids), new(ids))


def test_save_refuses_bad_targets_and_arguments(tmp_path):
    ours = our_model(seed=10, **OUR_CONFIGS["small"])
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"refusing to replace .*notes\.txt"):
        mm.save_pretrained(ours, notes)
    assert (notes / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        mm.save_pretrained(ours, tmp_path / "file")
    with pytest.raises(ValueError, match=r"layout must be one of \('hf', 'official'\), got 'gguf'"):
        mm.save_pretrained(ours, tmp_path / "a", layout="gguf")
    with pytest.raises(TypeError, match="model must be a MambaLM"):
        mm.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "a")
    with pytest.raises(TypeError, match="tokenizer must be a tokenizers.Tokenizer"):
        mm.save_pretrained(ours, tmp_path / "a", tokenizer={"a": 0})
    eps = our_model(seed=10, **OUR_CONFIGS["untied_noconvbias_eps"])
    with pytest.raises(ValueError, match="official layout has no field for rms_norm_eps"):
        mm.save_pretrained(eps, tmp_path / "a", layout="official")
    assert sorted(os.listdir(tmp_path)) == ["file", "mine"]


# ---------------------------------------------------------------------------------------------
# the Hub (faked: tests never touch the network)
# ---------------------------------------------------------------------------------------------

def test_hub_id_downloads_with_snapshot_download(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    ours = our_model(seed=11, **OUR_CONFIGS["small"])
    folder = mm.save_pretrained(ours, tmp_path / "snapshot", tokenizer=mm.build_char_tokenizer("xyz"))
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = mm.load_pretrained("state-spaces/mamba-130m-hf")
    assert calls == [("state-spaces/mamba-130m-hf", {"allow_patterns": ["*.json", "*.safetensors"]})]
    ids = random_ids(64)
    with torch.no_grad():
        assert torch.equal(model(ids), ours(ids))
    assert mm.load_tokenizer("state-spaces/mamba-130m-hf").encode("zyx").ids == [2, 1, 0]

    official = mm.save_pretrained(ours, tmp_path / "official", layout="official")
    folders = iter([tmp_path / "empty", official])  # no safetensors: a second call fetches the .bin
    (tmp_path / "empty").mkdir()
    calls.clear()
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: calls.append((repo_id, kw)) or str(next(folders)))
    model = mm.load_pretrained("state-spaces/mamba-130m")
    assert calls == [("state-spaces/mamba-130m", {"allow_patterns": ["*.json", "*.safetensors"]}),
                     ("state-spaces/mamba-130m", {"allow_patterns": ["*.json", "pytorch_model*.bin"]})]
    with torch.no_grad():
        assert torch.equal(model(ids), ours(ids))


def test_hub_without_huggingface_hub_or_network(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def offline(repo_id, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(mm.CheckpointError, match=r"could not download 'state-spaces/mamba-130m'.*"
                                                  r"ConnectionError.*local path"):
        mm.load_pretrained("state-spaces/mamba-130m")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now fails
    with pytest.raises(mm.CheckpointError, match=r"pip install huggingface_hub.*local path"):
        mm.load_pretrained("state-spaces/mamba-130m")
    with pytest.raises(mm.CheckpointError, match="no folder"):
        mm.load_pretrained("./no/such/folder")
    with pytest.raises(TypeError, match="path must be a folder path or a Hub id"):
        mm.load_pretrained(42)


# ---------------------------------------------------------------------------------------------
# bad checkpoints: each one explained, naming the key and the fix
# ---------------------------------------------------------------------------------------------

def test_tied_head_that_differs(tmp_path):
    hf = hf_model(seed=17, **HF_CONFIGS["small"])
    state = official_state(hf)
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    msg = load_error(write_official(tmp_path / "o", {"d_model": 32, "n_layer": 2, "vocab_size": 64}, state))
    assert "'lm_head.weight' differs from the embedding" in msg and '"tie_embeddings": false' in msg


def test_truncated_files(hf_folder, tmp_path):
    safe = hf_folder / "model.safetensors"
    safe.write_bytes(safe.read_bytes()[: safe.stat().st_size // 2])
    msg = load_error(hf_folder)
    assert "model.safetensors is not a readable safetensors file" in msg and "truncated" in msg

    hf = hf_model(seed=18, **HF_CONFIGS["small"])
    folder = write_official(tmp_path / "o", {"d_model": 32, "n_layer": 2, "vocab_size": 64}, official_state(hf))
    binary = folder / "pytorch_model.bin"
    binary.write_bytes(binary.read_bytes()[: binary.stat().st_size // 2])
    msg = load_error(folder)
    assert "pytorch_model.bin is not a readable PyTorch file" in msg and "truncated" in msg


@dataclass
class NotATensor:
    value: int = 1


def test_bin_that_is_not_a_plain_state_dict(tmp_path):
    config = {"d_model": 32, "n_layer": 2, "vocab_size": 64}
    msg = load_error(write_official(tmp_path / "a", config, {"weight": NotATensor()}))
    assert "holds objects other than tensors" in msg and "weights_only=True" in msg
    state = official_state(hf_model(seed=19, **HF_CONFIGS["small"]))
    msg = load_error(write_official(tmp_path / "b", config, {"model": state, "step": 3}))
    assert "is not a state dict: some values are not tensors (it wraps one under 'model'" in msg
    msg = load_error(write_official(tmp_path / "c", config, [1, 2, 3]))
    assert "is not a state dict (a dict of name -> tensor): it holds a list" in msg


def test_sharded_index_with_a_missing_shard(tmp_path):
    hf_model(seed=20, **HF_CONFIGS["small"]).save_pretrained(tmp_path / "s", max_shard_size="8KB")
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / "s" / shard).unlink()
    msg = load_error(tmp_path / "s")
    assert f"in {shard}, which is missing from" in msg and "download that shard" in msg



# ---------------------------------------------------------------------------------------------
# defects found by the adversarial review (2026-11-29, fixed in ede8461; the new-user review,
# fixed in dc98245, where said): each test failed before its fix
# ---------------------------------------------------------------------------------------------

def test_hf_round_trip_keeps_the_real_vocabulary(tmp_path):
    """vocab 9 padded to 16 rows: the HF layout stores 16, loading must give back 9 (else padded
    rows get sampled and the loss spreads over 16 columns)."""
    tok = mm.build_char_tokenizer("hello world\n")
    model = tiny_lm(vocab_size=tok.get_vocab_size())
    assert model.config.padded_vocab_size == 16
    back = mm.load_pretrained(mm.save_pretrained(model, tmp_path / "ck", tokenizer=tok))
    assert back.config.vocab_size == 9 and back.config.padded_vocab_size == 16
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["vocab_size"] == 16  # what transformers reads
    ids = torch.tensor([tok.encode("hello").ids])
    torch.testing.assert_close(back(ids), model(ids), rtol=0, atol=0)
    out = mm.generate(back, ids, 50, generator=torch.Generator().manual_seed(0))
    assert int(out.max()) < 9


def test_a_stale_tensor_in_another_shard_never_overrides_the_index(tmp_path):
    """Sharded loads trust the index only: a stale copy in another shard is refused, never loaded."""
    folder = mm.save_pretrained(tiny_lm(), tmp_path / "sh")
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    key = "backbone.embeddings.weight"
    rest = {k: v for k, v in state.items() if k != key}
    save_file({key: state[key]}, str(folder / "a.safetensors"))
    save_file(rest | {key: torch.zeros_like(state[key])}, str(folder / "b.safetensors"))  # stale copy
    index = {"weight_map": {key: "a.safetensors"} | {k: "b.safetensors" for k in rest}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(mm.CheckpointError, match="b.safetensors holds 'backbone.embeddings.weight'"):
        mm.load_pretrained(folder)


def test_a_shard_index_with_non_string_names_is_refused(tmp_path):
    """Sharded loads trust the index only, and only an index that names shard files."""
    folder = mm.save_pretrained(tiny_lm(), tmp_path / "sh")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": 1, "y": "a"}}))
    with pytest.raises(mm.CheckpointError, match="shard file names"):
        mm.load_pretrained(folder)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loading_keeps_A_log_and_D_in_float32(tmp_path, dtype):
    """Half-precision loads (cast on load, or saved half) keep ``A_log`` and ``D`` float32 and exact."""
    model = tiny_lm()
    folder = mm.save_pretrained(model, tmp_path / "ck")
    for loaded in (mm.load_pretrained(folder, dtype=dtype),                                  # cast on load
                   mm.load_pretrained(mm.save_pretrained(model.to(dtype), tmp_path / "h"))):  # saved half
        mixer, ref = loaded.backbone.layers[0].mixer, model.backbone.layers[0].mixer
        assert loaded.backbone.embedding.weight.dtype == dtype
        assert mixer.A_log.dtype == mixer.D.dtype == torch.float32
        assert torch.equal(mixer.A_log, ref.A_log) and torch.equal(mixer.D, ref.D)  # not rounded


def test_save_refuses_a_folder_holding_another_programs_config(tmp_path):
    """Saving never replaces a folder whose ``config.json`` belongs to another program."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "app"}')
    with pytest.raises(ValueError, match="not a Mamba checkpoint"):
        mm.save_pretrained(tiny_lm(), folder)
    assert (folder / "config.json").read_text() == '{"my": "app"}'


def test_save_refuses_a_model_it_could_not_load_back(tmp_path):
    """Saving refuses a model no Mamba loader reads: the LTI task model's mixers are not ``MambaMixer``."""
    with pytest.raises(ValueError, match="LTIMixer.*save_task_model"):
        mm.save_pretrained(tasks.task_model(16, selective=False, seed=0), tmp_path / "lti")
    assert not (tmp_path / "lti").exists()


def test_saved_checkpoints_are_readable_by_others_as_the_umask_allows(tmp_path):
    """New-user review: the atomic save gave folders 0700 (mkdtemp) and files 0600 (safetensors)."""
    old = os.umask(0o022)
    try:
        folder = mm.save_pretrained(tiny_lm(), tmp_path / "ck", tokenizer=mm.build_char_tokenizer("hello\n"))
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755  # mkdtemp alone gave 0700, safetensors 0600
    assert {f.name: f.stat().st_mode & 0o777 for f in folder.iterdir()} == {
        "config.json": 0o644, "model.safetensors": 0o644, "tokenizer.json": 0o644}


def test_hf_layout_refuses_a_model_with_an_mlp(tmp_path):
    """``d_intermediate > 0`` adds ``norm2`` and ``mlp`` to every block: the Hugging Face layout
    has no key for them (transformers' ``MambaForCausalLM`` has no MLP), so such a folder loaded
    nowhere, not even here; the official layout keeps them (``test_model.py`` round-trips it)."""
    model = tiny_lm(d_intermediate=40)
    with pytest.raises(ValueError, match=r"d_intermediate=40.*layout='official'"):
        mm.save_pretrained(model, tmp_path / "hf", layout="hf")
    assert not (tmp_path / "hf").exists()
    back = mm.load_pretrained(mm.save_pretrained(model, tmp_path / "official", layout="official"))
    ids = random_ids(9)
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))
