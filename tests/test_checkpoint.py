"""Checkpoints (minimamba_core/checkpoint.py) and tokenizers (minimamba_core/tokenizer.py).

The outside reference is transformers' ``MambaForCausalLM`` (pinned in constraints.txt): the
same random weights must give the same logits (relative error <= 1e-5 in float32), the same
32 greedy tokens and the same cached-decoding logits, in both directions
(transformers -> us, us -> transformers). Official-layout folders are written here by hand
(official key names, nested ``ssm_cfg``), independently of ``save_pretrained``. Every bad
checkpoint has a test that asserts the exception and its message. Nothing touches the network.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import MambaConfig as HFMambaConfig
from transformers import MambaForCausalLM

import minimamba_core as mm
from minimamba_core import checkpoint as ckpt

transformers.logging.set_verbosity_error()  # silence "falling back to the reference implementation"
REL_TOL = 1e-5  # the issue's bound on the logits' relative error in float32
N_GREEDY = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: no test may reach the network


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@torch.no_grad()
def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Add noise to every parameter, so biases, D, A_log, the norms are all non-trivial."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def hf_model(seed: int = 0, **kwargs) -> MambaForCausalLM:
    torch.manual_seed(seed)
    model = MambaForCausalLM(HFMambaConfig(**kwargs))
    perturb_(model, seed)
    model.generation_config.eos_token_id = None  # never stop early: compare all 32 tokens
    return model.eval()


def our_model(seed: int = 0, **kwargs) -> mm.MambaLM:
    torch.manual_seed(seed)
    model = mm.MambaLM(mm.MambaConfig(**kwargs))
    perturb_(model, seed)
    return model.eval()


def random_ids(vocab: int, shape=(2, 11), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def assert_same_model(ours: mm.MambaLM, hf: MambaForCausalLM) -> None:
    """Same logits, same 32 greedy tokens, same cached-decoding logits."""
    hf.generation_config.eos_token_id = None
    vocab, padded = ours.config.vocab_size, ours.config.padded_vocab_size
    ids = random_ids(vocab)
    ours_logits, hf_logits = ours(ids), hf(ids).logits  # (b, l, padded)
    assert ours_logits.shape == hf_logits.shape == (*ids.shape, padded)
    assert rel_err(ours_logits, hf_logits) <= REL_TOL

    prompt = ids[:1, :5]
    ours_ids = mm.generate(ours, prompt, N_GREEDY, temperature=0)
    # our sampler never picks a padded id (>= vocab_size); tell transformers the same
    # an explicit mask: otherwise transformers takes id 0 (its default pad_token_id) for padding
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=N_GREEDY,
                      do_sample=False, eos_token_id=None,
                      suppress_tokens=list(range(vocab, padded)) or None,
                      output_logits=True, return_dict_in_generate=True)
    assert torch.equal(ours_ids, out.sequences), (ours_ids.tolist(), out.sequences.tolist())

    cache = ours.empty_cache(1)  # our prefill + steps over the same tokens
    steps = [ours(prompt, cache=cache)[:, -1]]
    for t in out.sequences[0, prompt.shape[1]:-1]:
        steps.append(ours.step(t.view(1, 1), cache)[:, -1])
    hf_steps = torch.stack(out.logits, dim=1)  # (1, N_GREEDY, padded): transformers' cached decoding
    assert rel_err(torch.stack(steps, dim=1), hf_steps) <= REL_TOL


def official_state(hf: MambaForCausalLM) -> dict[str, torch.Tensor]:
    """An official-layout state dict from transformers' weights, renamed by hand."""
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
             for k, v in hf.state_dict().items()}
    state.setdefault("lm_head.weight", state["backbone.embedding.weight"])
    return state


def write_official(folder: Path, config: dict, state: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state, folder / "pytorch_model.bin")
    return folder


# ---------------------------------------------------------------------------------------------
# transformers -> us, us -> transformers, official layout
# ---------------------------------------------------------------------------------------------

HF_CONFIGS = {
    "small": dict(vocab_size=64, hidden_size=32, num_hidden_layers=2),
    "odd_vocab_bias": dict(vocab_size=37, hidden_size=16, num_hidden_layers=2, use_bias=True),
    "dstate8_expand3_rank5": dict(vocab_size=50, hidden_size=24, num_hidden_layers=3, state_size=8,
                                  expand=3, time_step_rank=5, conv_kernel=3),
    "untied_noconvbias_eps": dict(vocab_size=41, hidden_size=16, num_hidden_layers=1,
                                  tie_word_embeddings=False, use_conv_bias=False,
                                  layer_norm_epsilon=1e-6),
    # transformers sizes the layers by intermediate_size and ignores expand (left at 2 here):
    # the shape of its own test configuration (MambaModelTester: hidden 32, intermediate 32)
    "intermediate_equals_hidden": dict(vocab_size=99, hidden_size=32, intermediate_size=32,
                                       num_hidden_layers=2),
    "intermediate_three_times_hidden": dict(vocab_size=64, hidden_size=16, intermediate_size=48,
                                            num_hidden_layers=2),
}


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


OUR_CONFIGS = {
    "small": dict(d_model=32, n_layer=2, vocab_size=64),
    "odd_vocab_bias": dict(d_model=16, n_layer=2, vocab_size=37, pad_vocab_size_multiple=1, bias=True),
    "padded_vocab_dstate8_expand3_rank5": dict(d_model=24, n_layer=3, vocab_size=45, d_state=8, expand=3,
                                               dt_rank=5, d_conv=3),  # 45 tokens, 48 rows
    "untied_noconvbias_eps": dict(d_model=16, n_layer=1, vocab_size=41, tie_embeddings=False,
                                  conv_bias=False, rms_norm_eps=1e-6),
}


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

@pytest.fixture
def hf_folder(tmp_path) -> Path:
    """A transformers-written folder (odd vocab, biases) that the tests below damage."""
    hf_model(seed=12, **HF_CONFIGS["odd_vocab_bias"]).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def _edit_tensors(folder: Path, edit) -> None:
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _load_error(folder) -> str:
    with pytest.raises(mm.CheckpointError) as info:
        mm.load_pretrained(folder)
    return str(info.value)


def test_missing_key(hf_folder):
    _edit_tensors(hf_folder, lambda t: t.pop("backbone.layers.1.mixer.D"))
    msg = _load_error(hf_folder)
    assert "missing key 'backbone.layers.1.mixer.D' (expected shape (32,))" in msg
    assert "hf layout, model.safetensors" in msg


def test_unexpected_key(hf_folder):
    _edit_tensors(hf_folder, lambda t: t.update({"backbone.layers.0.mixer.extra": torch.zeros(3)}))
    assert "unexpected key 'backbone.layers.0.mixer.extra'" in _load_error(hf_folder)


def test_wrong_shape(hf_folder):
    _edit_tensors(hf_folder, lambda t: t.update({"backbone.layers.0.mixer.D": torch.zeros(5)}))
    msg = _load_error(hf_folder)
    assert "'backbone.layers.0.mixer.D' has shape (5,) in the file but the config gives (32,)" in msg


def test_config_disagrees_with_tensors(hf_folder):
    _edit_config(hf_folder, state_size=4, time_step_rank=3, num_hidden_layers=3)
    msg = _load_error(hf_folder)
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
    msg = _load_error(tmp_path / "ck")
    assert "intermediate_size=24 is not a whole multiple of hidden_size=16" in msg
    assert "fix one of those two keys" in msg


def test_intermediate_size_disagrees_with_tensors(hf_folder):
    _edit_config(hf_folder, intermediate_size=64)  # the tensors were written with d_inner = 32
    msg = _load_error(hf_folder)
    assert ('config.json says intermediate_size=64 but backbone.layers.0.mixer.in_proj.weight has shape '
            '(64, 16): set "intermediate_size": 32') in msg


def test_bias_flag_disagrees_with_tensors(hf_folder):
    _edit_config(hf_folder, use_bias=False)
    msg = _load_error(hf_folder)
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
    msg = _load_error(write_official(tmp_path / "o2", config, state))
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
    msg = _load_error(_official_130m_like(tmp_path, rows=50277, config_vocab=50277))
    assert ("config.json says vocab_size=50277 padded to a multiple of pad_vocab_size_multiple=8, i.e. 50280 "
            "rows, but backbone.embedding.weight has shape (50277, 4): "
            'set "pad_vocab_size_multiple": 1 (the rows are not padded)') in msg


def test_vocab_size_mismatch_hf(tmp_path):
    hf_model(seed=15, vocab_size=50280, hidden_size=4, num_hidden_layers=1).save_pretrained(tmp_path / "hf")
    _edit_config(tmp_path / "hf", vocab_size=50277)
    msg = _load_error(tmp_path / "hf")
    assert ("config.json says vocab_size=50277 but backbone.embeddings.weight has shape (50280, 4); a Hugging "
            'Face checkpoint stores exactly vocab_size rows (mamba-130m-hf: 50280): set "vocab_size": 50280') in msg


def test_hf_key_names_under_an_official_config(tmp_path):
    hf = hf_model(seed=16, **HF_CONFIGS["small"])
    config = {"d_model": 32, "n_layer": 2, "vocab_size": 64}
    msg = _load_error(write_official(tmp_path / "o", config, dict(hf.state_dict())))
    assert "unexpected key 'backbone.embeddings.weight' (that is the Hugging Face name" in msg
    assert "missing key 'backbone.embedding.weight'" in msg


def test_tied_head_that_differs(tmp_path):
    hf = hf_model(seed=17, **HF_CONFIGS["small"])
    state = official_state(hf)
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    msg = _load_error(write_official(tmp_path / "o", {"d_model": 32, "n_layer": 2, "vocab_size": 64}, state))
    assert "'lm_head.weight' differs from the embedding" in msg and '"tie_embeddings": false' in msg


def test_not_a_checkpoint(tmp_path, hf_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no config.json" in _load_error(empty)
    (empty / "config.json").write_text('{"hidden_size": 16, "num_hid')  # truncated JSON
    assert "is not valid JSON" in _load_error(empty)
    (empty / "config.json").write_text('{"model_type": "gpt2", "n_embd": 16}')
    assert "model_type is 'gpt2'; only Mamba-1" in _load_error(empty)
    (empty / "config.json").write_text('{"foo": 1}')
    assert "is not a Mamba config" in _load_error(empty)
    (empty / "config.json").write_text('{"d_model": 16, "n_layer": 2, "vocab_size": 37, '
                                       '"ssm_cfg": {"layer": "Mamba2", "headdim": 8}}')
    assert "ssm_cfg.layer is 'Mamba2'; only Mamba-1" in _load_error(empty)
    (empty / "config.json").write_text('{"d_model": 16, "n_layer": 2, "vocab_size": 37}')
    assert "has a config.json but no weights: expected model.safetensors" in _load_error(empty)
    with pytest.raises(mm.CheckpointError, match="is a file; pass the folder"):
        mm.load_pretrained(hf_folder / "config.json")


def test_truncated_files(hf_folder, tmp_path):
    safe = hf_folder / "model.safetensors"
    safe.write_bytes(safe.read_bytes()[: safe.stat().st_size // 2])
    msg = _load_error(hf_folder)
    assert "model.safetensors is not a readable safetensors file" in msg and "truncated" in msg

    hf = hf_model(seed=18, **HF_CONFIGS["small"])
    folder = write_official(tmp_path / "o", {"d_model": 32, "n_layer": 2, "vocab_size": 64}, official_state(hf))
    binary = folder / "pytorch_model.bin"
    binary.write_bytes(binary.read_bytes()[: binary.stat().st_size // 2])
    msg = _load_error(folder)
    assert "pytorch_model.bin is not a readable PyTorch file" in msg and "truncated" in msg


@dataclass
class NotATensor:
    value: int = 1


def test_bin_that_is_not_a_plain_state_dict(tmp_path):
    config = {"d_model": 32, "n_layer": 2, "vocab_size": 64}
    msg = _load_error(write_official(tmp_path / "a", config, {"weight": NotATensor()}))
    assert "holds objects other than tensors" in msg and "weights_only=True" in msg
    state = official_state(hf_model(seed=19, **HF_CONFIGS["small"]))
    msg = _load_error(write_official(tmp_path / "b", config, {"model": state, "step": 3}))
    assert "is not a state dict: some values are not tensors (it wraps one under 'model'" in msg
    msg = _load_error(write_official(tmp_path / "c", config, [1, 2, 3]))
    assert "is not a state dict (a dict of name -> tensor): it holds a list" in msg


def test_sharded_index_with_a_missing_shard(tmp_path):
    hf_model(seed=20, **HF_CONFIGS["small"]).save_pretrained(tmp_path / "s", max_shard_size="8KB")
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / "s" / shard).unlink()
    msg = _load_error(tmp_path / "s")
    assert f"in {shard}, which is missing from" in msg and "download that shard" in msg


# ---------------------------------------------------------------------------------------------
# tokenizers
# ---------------------------------------------------------------------------------------------

def test_char_tokenizer_round_trip_and_ids():
    text = "First Citizen:\nBefore we proceed, hear me speak.\n\tÄ é  !"
    tok = mm.build_char_tokenizer(text)
    chars = sorted(set(text))
    assert tok.get_vocab_size() == len(chars)
    assert tok.encode(text).ids == [chars.index(c) for c in text]  # sorted-character ids
    assert tok.decode(tok.encode(text).ids) == text  # spaces, tabs, newlines survive
    with pytest.raises(Exception, match="Missing"):
        tok.encode("Q")  # unknown character, no unk_token
    with_unk = mm.build_char_tokenizer("ab", unk_token="<unk>")
    assert with_unk.encode("abz").ids == [0, 1, 2]
    with pytest.raises(ValueError, match="text is empty"):
        mm.build_char_tokenizer("")
    with pytest.raises(TypeError, match="text must be a str"):
        mm.build_char_tokenizer(["a"])
    with pytest.raises(ValueError, match="unk_token 'a' is a character of text"):
        mm.build_char_tokenizer("ab", unk_token="a")


@pytest.mark.parametrize("layout", ckpt.LAYOUTS)
def test_tokenizer_saved_and_loaded_with_the_checkpoint(layout, tmp_path):
    tok = mm.build_char_tokenizer("to be or not to be")
    ours = our_model(seed=21, d_model=8, n_layer=1, vocab_size=tok.get_vocab_size())
    folder = mm.save_pretrained(ours, tmp_path / layout, layout=layout, tokenizer=tok)
    loaded = mm.load_tokenizer(folder)
    assert loaded.encode("not to be").ids == tok.encode("not to be").ids
    assert loaded.decode(loaded.encode("to be").ids) == "to be"
    assert mm.load_tokenizer(folder / "tokenizer.json").get_vocab_size() == tok.get_vocab_size()


def test_load_tokenizer_errors(tmp_path):
    ours = our_model(seed=22, **OUR_CONFIGS["small"])
    folder = mm.save_pretrained(ours, tmp_path / "official", layout="official")
    with pytest.raises(mm.CheckpointError, match=r"has no tokenizer.json\. The official .*GPT-NeoX-20B"):
        mm.load_tokenizer(folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(mm.CheckpointError, match="is not a tokenizers file"):
        mm.load_tokenizer(folder)
