"""Plot functions of notebooks 06, 07 and 10 (``minimamba_core/viz/lm.py``, ``sampling.py``): the data behind each figure.

Each function is called with several slider values, and the returned ``data`` is checked
against numbers derived independently (formulas, the configuration), not against pixels.
"""

import math

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import minimamba_core as mm  # noqa: E402
from minimamba_core import viz  # noqa: E402


def call(fn, **kwargs):
    fig, data = fn(**kwargs)
    assert isinstance(fig, matplotlib.figure.Figure)
    plt.close(fig)
    return data


# ---- notebook 06 ----------------------------------------------------------------------------

@pytest.mark.parametrize("dt_min, dt_max", [(1e-3, 0.1), (1e-2, 1.0), (1e-4, 1e-2), (0.05, 0.05)])
def test_dt_init_is_log_uniform_in_range(dt_min, dt_max):
    data = call(viz.plot_dt_init, dt_min=dt_min, dt_max=dt_max, d_inner=512, seed=1)
    dt = data["dt"]
    assert dt.shape == (512,) and dt.dtype == np.float64
    # float32 bias -> softplus: relative round-off of a few 1e-7
    assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
    assert data["counts"].sum() == 512
    assert np.allclose(data["expected"], 512 / len(data["counts"]))
    if dt_max > dt_min:
        assert data["ks"] < data["ks_threshold"]
        assert data["ks_threshold"] == pytest.approx(1.63 / math.sqrt(512))


def test_dt_init_below_the_floor_piles_up_at_the_floor():
    # dt_min = 1e-5 < dt_init_floor = 1e-4: a log-uniform draw on [1e-5, 1e-2] falls below the
    # floor with probability log(10) / log(1000) = 1/3, and each such draw is clamped to 1e-4.
    data = call(viz.plot_dt_init, dt_min=1e-5, dt_max=1e-2, d_inner=1536, seed=0)
    at_floor = np.isclose(data["dt"], 1e-4, rtol=1e-4).mean()
    assert abs(at_floor - 1 / 3) < 0.05
    assert data["dt"].min() == pytest.approx(1e-4, rel=1e-4)
    assert data["ks"] > 0.25  # the CDF jumps by 1/3 at the floor


def test_dt_init_seed_and_validation():
    a = call(viz.plot_dt_init, d_inner=64, seed=0)["dt"]
    b = call(viz.plot_dt_init, d_inner=64, seed=0)["dt"]
    c = call(viz.plot_dt_init, d_inner=64, seed=3)["dt"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="d_inner"):
        viz.plot_dt_init(d_inner=63)
    with pytest.raises(ValueError, match="dt_min"):
        viz.plot_dt_init(dt_min=0.5, dt_max=0.1)


def _count(d_model, n_layer, vocab=50277):
    # paper-shape formula, written out independently of the model (notebook 06, eq. 5)
    E, N, k, R = 2, 16, 4, math.ceil(d_model / 16)
    ED = E * d_model
    block = 2 * ED * d_model + ED * (k + 1) + ED * (R + 2 * N) + ED * (R + 1) + ED * (N + 1) + ED * d_model + d_model
    return math.ceil(vocab / 8) * 8 * d_model + n_layer * block + d_model


def test_param_breakdown_sums_to_the_published_counts():
    configs = {"130m": mm.MambaConfig(d_model=768, n_layer=24, vocab_size=50277),
               "2.8b": mm.MambaConfig(d_model=2560, n_layer=64, vocab_size=50277),
               "tiny": mm.MambaConfig(d_model=16, n_layer=2, vocab_size=10)}
    data = call(viz.plot_param_breakdown, configs=configs)
    assert data["labels"] == ["130m", "2.8b", "tiny"]
    # 129,135,360 = transformers.MambaForCausalLM(hidden_size=768, num_hidden_layers=24,
    # vocab_size=50280).num_parameters() (transformers 5.24.0), and = the formula
    assert data["totals"][0] == 129_135_360 == _count(768, 24)
    assert data["totals"][1] == _count(2560, 64)
    assert data["totals"][2] == mm.MambaLM(configs["tiny"]).num_parameters()
    assert (data["counts"].sum(axis=1) == data["totals"]).all()
    assert data["counts"][0, 0] == 50280 * 768  # the embedding (= tied head), counted once
    assert data["counts"][0, 1] == 24 * 2 * 1536 * 768  # in_proj
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_param_breakdown({})
    with pytest.raises(TypeError, match="MambaConfig"):
        viz.plot_param_breakdown({"x": {"d_model": 8}})


# ---- notebook 07 ----------------------------------------------------------------------------

@pytest.mark.parametrize("length, n_layer", [(2, 1), (17, 2), (40, 3)])
def test_decode_error_is_at_roundoff(length, n_layer):
    data = call(viz.plot_decode_error, length=length, d_model=16, n_layer=n_layer, vocab_size=32)
    assert data["positions"].tolist() == list(range(length))
    assert data["err_fp32"].shape == data["err_fp64"].shape == (length,)
    assert data["err_fp64"].max() < 1e-13
    assert data["err_fp32"].max() < 1e-5
    assert data["logit_scale"] > 0


def test_decode_error_validation():
    with pytest.raises(ValueError, match="length"):
        viz.plot_decode_error(length=1)


@pytest.mark.parametrize("d_state, expand, d_model, max_len, chunk",
                         [(16, 2, 64, 256, 16), (1, 1, 32, 50, 16), (64, 4, 16, 96, 32), (8, 2, 64, 5, 1)])
def test_cache_memory_constant_against_linear(d_state, expand, d_model, max_len, chunk):
    data = call(viz.plot_cache_memory, d_model=d_model, d_state=d_state, expand=expand, d_conv=4,
                max_len=max_len, chunk=chunk, n_head=4)
    lengths = data["lengths"]
    expected_lengths = sorted(set(list(range(0, max_len, chunk)) + [max_len]))
    assert lengths.tolist() == expected_lengths
    # float32: 4 bytes a number; Mamba keeps d_inner * (d_conv + d_state) per layer
    assert (data["mamba_bytes"] == 4 * expand * d_model * (4 + d_state)).all()
    # attention keeps a key and a value of d_model numbers per token
    assert (data["kv_bytes"] == 4 * 2 * d_model * lengths).all()
    assert data["crossover"] == expand * (d_state + 4) / 2
    larger = lengths[data["kv_bytes"] > data["mamba_bytes"]]
    if len(larger):
        assert larger.min() > data["crossover"]


def test_cache_memory_validation():
    with pytest.raises(ValueError, match="n_head"):
        viz.plot_cache_memory(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="max_len"):
        viz.plot_cache_memory(max_len=0)


@pytest.mark.parametrize("lengths", [(4, 8), (3, 16, 5)])
def test_time_per_token_returns_one_time_per_length(lengths):
    data = call(viz.plot_time_per_token, d_model=16, n_layer=1, lengths=lengths, repeats=1)
    assert data["lengths"].tolist() == list(lengths)
    for key in ("seconds_no_cache", "seconds_cache"):
        assert data[key].shape == (len(lengths),) and (data[key] > 0).all()
    with pytest.raises(ValueError, match="repeats"):
        viz.plot_time_per_token(repeats=0)


# ---- notebook 10 ----------------------------------------------------------------------------

def _reference(z, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, seen=()):
    """The sampling controls from their definitions, in float64 NumPy (as in notebook 10)."""
    z = np.array(z, dtype=np.float64)
    for i in set(seen):
        z[i] = z[i] / repetition_penalty if z[i] > 0 else z[i] * repetition_penalty
    if temperature == 0:
        return np.eye(len(z))[np.argmax(z)]
    p = np.exp((z - z.max()) / temperature)
    p /= p.sum()
    if top_k > 0:
        p[np.argsort(-p, kind="stable")[top_k:]] = 0
        p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        p[order[(np.cumsum(p[order]) - p[order]) >= top_p]] = 0
        p /= p.sum()
    if min_p > 0.0:
        p[p < min_p * p.max()] = 0
        p /= p.sum()
    return p


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    model = mm.MambaLM(mm.MambaConfig(d_model=16, n_layer=1, vocab_size=12)).eval()
    with torch.no_grad():
        model.backbone.embedding.weight *= 40  # spread the logits so the filters have work to do
    prompt = torch.tensor([[1, 2, 3, 2]])
    with torch.no_grad():
        z = model(prompt)[0, -1, :12].double().numpy()
    return model, prompt, z


def _decode(ids):
    return "".join("abcdefghij\n "[i] for i in ids)


def _check_against_reference(empirical, ref, draws):
    assert empirical.sum() == pytest.approx(1.0)
    assert (empirical[ref == 0] == 0).all()
    assert (np.abs(empirical - ref) <= 5 * np.sqrt(ref * (1 - ref) / draws) + 1e-12).all()


@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (0.5, 0.9), (1.0, 0.3), (2.0, 1.0), (1.0, 0.05)])
def test_sampling_widget_matches_the_definitions(tiny_lm, temperature, top_p):
    model, prompt, z = tiny_lm
    data = call(viz.plot_sampling, model=model, prompt_ids=prompt, decode=_decode,
                temperature=temperature, top_p=top_p, seed=0, max_new_tokens=15, draws=4000)
    ref = _reference(z, temperature=temperature, top_p=top_p)
    _check_against_reference(data["empirical"][0], ref, 4000)
    # "kept" counts the tokens ever drawn: every allowed token likely enough to show up in 4000
    # draws, and none that the definitions exclude
    assert int((ref > 10 / 4000).sum()) <= data["kept"] <= int((ref > 0).sum())
    assert len(data["continuations"][0]) == 15 and data["text"] == _decode(data["continuations"][0])
    assert np.allclose(data["probs"], _reference(z))
    assert list(data["top_ids"]) == list(np.argsort(-data["probs"], kind="stable")[:15])


def test_sampling_widget_is_reproducible_and_seed_dependent(tiny_lm):
    model, prompt, _ = tiny_lm
    kw = dict(model=model, prompt_ids=prompt, decode=_decode, temperature=1.0, top_p=1.0,
              max_new_tokens=30, draws=100)
    a, b, c = (call(viz.plot_sampling, seed=s, **kw)["text"] for s in (0, 0, 5))
    assert a == b and a != c


def test_generation_controls_side_by_side(tiny_lm):
    model, prompt, z = tiny_lm
    settings = {"plain": {}, "top-k 3": {"top_k": 3}, "min-p 0.2": {"min_p": 0.2},
                "rep 2": {"repetition_penalty": 2.0}, "greedy": {"temperature": 0},
                "mix": {"temperature": 0.7, "top_k": 6, "top_p": 0.8, "min_p": 0.05}}
    data = call(viz.plot_generation_controls, model=model, prompt_ids=prompt, decode=_decode,
                settings=settings, max_new_tokens=10, draws=4000, seed=1, top=8, columns=4)
    assert data["names"] == list(settings) and data["empirical"].shape == (6, 12)
    for name, empirical in zip(data["names"], data["empirical"]):
        _check_against_reference(empirical, _reference(z, seen=prompt[0].tolist(), **settings[name]), 4000)
    assert 1 <= (data["empirical"][1] > 0).sum() <= 3  # top-k = 3
    # greedy continuation == argmax of the full forward on the growing text
    ids = prompt
    with torch.no_grad():
        for _ in range(10):
            ids = torch.cat([ids, model(ids)[:, -1, :12].argmax(-1, keepdim=True)], dim=1)
    assert data["continuations"][4] == ids[0, 4:].tolist()
    assert all(len(c) == 10 for c in data["continuations"])


def test_generation_controls_validation(tiny_lm):
    model, prompt, _ = tiny_lm
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_generation_controls(model, prompt, _decode, {})
    with pytest.raises(ValueError, match="unknown sampling control"):
        viz.plot_generation_controls(model, prompt, _decode, {"x": {"topk": 3}})
    with pytest.raises(ValueError, match=r"\(1, l\)"):
        viz.plot_sampling(model, prompt[0], _decode)
    with pytest.raises(ValueError, match="top_p"):
        viz.plot_sampling(model, prompt, _decode, top_p=0.0)
    with pytest.raises(TypeError, match="MambaLM"):
        viz.plot_sampling("model", prompt, _decode)
    plt.close("all")
