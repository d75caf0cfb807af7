"""The Mamba-3 scan: twins, states, gradients, the official references' numbers, bad inputs."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minimamba_core.mamba3 import mamba3_chunked, mamba3_sequential, rotate_pairs
from minimamba_core.ssd import ssd_sequential

FIXTURES = Path(__file__).parent / "fixtures"


def make_inputs(b=2, l=11, h=4, g=2, p=3, n=8, S=2, dtype=torch.float64, seed=0, states=True, dt_max=0.8):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=gen, dtype=dtype)  # noqa: E731
    kw = dict(x=r(b, l, h, p), dt=0.01 + dt_max * u(b, l, h), A=-(0.1 + 3 * u(b, l, h)), B=r(b, l, g, n),
              C=r(b, l, g, n), trap=r(b, l, h), angles=2 * r(b, l, h, S), B_bias=r(h, n), C_bias=r(h, n),
              D=r(h), z=r(b, l, h, p))
    if states:
        kw["initial_states"] = (2 * math.pi * u(b, h, S), r(b, h, p, n), r(b, h, n), r(b, h, p))
    return kw


def along(kw, sl):
    """The inputs restricted to the tokens ``sl`` (per-token tensors only)."""
    per_token = ("x", "dt", "A", "B", "C", "trap", "angles", "z")
    return {k: (v[:, sl] if k in per_token and v is not None else v) for k, v in kw.items()}


def angle_gap(a, b):
    d = (a - b.to(a.dtype)).abs()
    return torch.minimum(d, 2 * math.pi - d).max().item()  # angles live on the circle


def max_gap(ya, fa, yb, fb):
    return max([(ya - yb).abs().max().item(), angle_gap(fa[0], fb[0])]
               + [(s - t).abs().max().item() for s, t in zip(fa[1:], fb[1:])])


@pytest.mark.parametrize("l", [1, 2, 3, 7, 64, 100])
@pytest.mark.parametrize("chunk_size", [1, 4, 16, 64])
@pytest.mark.parametrize("states", [False, True])
def test_twins_agree_in_float64(l, chunk_size, states):
    kw = make_inputs(l=l, states=states, seed=l)
    y1, f1 = mamba3_sequential(**kw, return_final_states=True)
    y2, f2 = mamba3_chunked(**kw, return_final_states=True, chunk_size=chunk_size)
    assert y1.dtype == torch.float64 and y1.shape == kw["x"].shape
    assert max_gap(y1, f1, y2, f2) < 1e-12


@pytest.mark.parametrize("scan", ["sequential", "chunked"])
def test_final_states_hand_over_at_every_split(scan):
    run = mamba3_sequential if scan == "sequential" else (lambda **k: mamba3_chunked(**k, chunk_size=4))
    kw = make_inputs(l=13)
    y, f = run(**kw, return_final_states=True)
    for k in range(1, 13):
        ya, fa = run(**along(kw, slice(0, k)), return_final_states=True)
        yb, fb = run(**{**along(kw, slice(k, None)), "initial_states": fa}, return_final_states=True)
        assert max_gap(torch.cat([ya, yb], 1), fb, y, f) < 1e-12, k


def test_float32_arithmetic_and_dtypes():
    kw = make_inputs(l=40)
    y64, f64 = mamba3_sequential(**kw, return_final_states=True)
    kw32 = {k: (v.float() if torch.is_tensor(v) else tuple(s.float() for s in v)) for k, v in kw.items()}
    y32, f32 = mamba3_chunked(**kw32, return_final_states=True, chunk_size=16)
    assert y32.dtype == torch.float32 and all(s.dtype == torch.float32 for s in f32)
    assert (y32.double() - y64).abs().max().item() < 1e-4 * y64.abs().max().item()


def test_euler_limit_is_mamba2():
    """lam = 1 (trap -> +inf), no rotation, no biases, A constant: the Mamba-2 recurrence (ssd.py)."""
    kw = make_inputs(l=9, h=2, g=1, states=False)
    A = -torch.tensor([0.7, 1.9], dtype=torch.float64)
    kw.update(A=A.expand(2, 9, 2), trap=torch.full((2, 9, 2), 1e3, dtype=torch.float64),
              angles=torch.zeros(2, 9, 2, 2, dtype=torch.float64),
              B_bias=torch.zeros(2, 8, dtype=torch.float64), C_bias=torch.zeros(2, 8, dtype=torch.float64))
    want = ssd_sequential(kw["x"], kw["dt"], A, kw["B"], kw["C"], D=kw["D"], z=kw["z"])
    assert (mamba3_chunked(**kw, chunk_size=4) - want).abs().max().item() < 1e-12


def test_hand_computed_trapezoid():
    """One head, p = 1, n = 2, no rotation: h_1 = a1 h_0 + b1 k0 x0 + c1 k1 x1, worked by hand."""
    f = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    x = f([2.0, 3.0]).view(1, 2, 1, 1)
    dt = f([math.log(2), math.log(2)]).view(1, 2, 1)  # with A = -1: alpha = 1/2
    B = f([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    C = f([[1.0, 1.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    trap = torch.zeros(1, 2, 1, dtype=torch.float64)  # lam = 1/2
    y = mamba3_sequential(x, dt, -torch.ones(1, 2, 1, dtype=torch.float64), B, C, trap,
                          torch.zeros(1, 2, 1, 1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                          torch.zeros(1, 2, dtype=torch.float64))
    ln2 = math.log(2)
    h0 = [0.5 * ln2 * 2.0, 0.0]  # gamma_0 k_0 x_0; nothing before token 0
    h1 = [0.5 * h0[0] + 0.5 * ln2 * 0.5 * 2.0, 0.5 * ln2 * 3.0]  # alpha h0 + beta k0 x0 + gamma k1 x1
    assert torch.allclose(y.flatten(), f([sum(h0), sum(h1)]), atol=1e-15, rtol=0)


def test_rotation_turns_pairs_and_only_relative_angles_matter():
    v = torch.tensor([1.0, 0.0, 5.0], dtype=torch.float64)
    assert torch.allclose(rotate_pairs(v, torch.tensor([math.pi / 2], dtype=torch.float64)),
                          torch.tensor([0.0, 1.0, 5.0], dtype=torch.float64), atol=1e-15)
    kw = make_inputs(l=12)
    y, f = mamba3_chunked(**kw, return_final_states=True, chunk_size=5)
    theta, ssm, k, v = kw["initial_states"]
    # turn every stored key and the state's key axis by the same extra angle: outputs do not move
    turn = torch.full_like(theta, 1.3)
    ssm_turned = rotate_pairs(ssm, turn[:, :, None, :])
    y2 = mamba3_chunked(**{**kw, "initial_states": (theta + turn, ssm_turned, rotate_pairs(k, turn), v)},
                        chunk_size=5)
    assert (y - y2).abs().max().item() < 1e-12


@pytest.mark.parametrize("scan", ["sequential", "chunked"])
def test_gradcheck(scan):
    kw = make_inputs(b=1, l=5, h=2, g=1, p=2, n=4, S=1, seed=3)
    names = ["x", "dt", "A", "B", "C", "trap", "angles", "B_bias", "C_bias", "D", "z"]
    leaves = [kw[k].clone().requires_grad_() for k in names] + [s.clone().requires_grad_()
                                                                  for s in kw["initial_states"]]
    run = mamba3_sequential if scan == "sequential" else (lambda **k: mamba3_chunked(**k, chunk_size=2))

    def f(*ts):
        args = dict(zip(names, ts[:11]))
        y, fin = run(**args, initial_states=tuple(ts[11:]), return_final_states=True)
        return (y,) + fin[1:]  # the angle state's remainder mod 2 pi is a step function

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, fast_mode=scan == "chunked")


def _fixture_case(T, case, ssm_as_step_ref=False):
    g = lambda k: T.get(f"{case}.{k}")  # noqa: E731
    tr = lambda t: t.transpose(1, 2)  # official (b, h, l) -> ours (b, l, h)  # noqa: E731
    states = None
    if g("SSM_State") is not None:
        ssm = g("SSM_State").float().double() if ssm_as_step_ref else g("SSM_State")
        states = (g("Angle_State"), ssm, g("K_State"), g("V_State"))
    return dict(x=g("V"), dt=tr(g("DT")), A=tr(g("A")), B=g("K"), C=g("Q"), trap=tr(g("Trap")),
                angles=g("Angles"), B_bias=g("K_bias"), C_bias=g("Q_bias"), D=g("D"), z=g("Z"),
                initial_states=states), g


def official_relative_error(ours, ref, mask=1e-3, q=0.95):
    """The official tests' measure: a high quantile of |ours - ref| / |ref| over entries not near 0."""
    ours, ref = ours.double(), ref.double()
    keep = ref.abs() >= mask
    rel = ((ours - ref).abs() / (ref.abs() + 1e-6))[keep]
    return torch.quantile(rel, q).item()


@pytest.fixture(scope="module")
def official():
    meta = json.loads((FIXTURES / "mamba3_siso_ref.json").read_text())
    assert meta["source"]["commit"].startswith("e9594ce")
    return load_file(FIXTURES / "mamba3_siso_ref.safetensors")


@pytest.mark.parametrize("case", ["small_dt", "large_dt"])
@pytest.mark.parametrize("scan", ["sequential", "chunked"])
def test_equals_official_step_reference_in_float64(official, case, scan):
    """mamba3_siso_step_ref runs in float64 here but rounds the initial SSM state to float32; so do we."""
    kw, g = _fixture_case(official, case, ssm_as_step_ref=True)
    run = mamba3_sequential if scan == "sequential" else (lambda **k: mamba3_chunked(**k, chunk_size=8))
    y, (theta, ssm, k, v) = run(**kw, return_final_states=True)
    assert (y - g("step_ref.y")).abs().max().item() < 1e-12
    assert angle_gap(theta, g("step_ref.final_angle")) < 1e-12
    for ours, name in ((ssm, "ssm"), (k, "k"), (v, "v")):
        assert (ours - g(f"step_ref.final_{name}")).abs().max().item() < 1e-12, name


@pytest.mark.parametrize("case", ["small_dt", "large_dt"])
def test_token_by_token_decoding_equals_official_step_reference(official, case):
    """The decoding step (one token at a time, the states handed on) against mamba3_siso_step_ref."""
    kw, g = _fixture_case(official, case, ssm_as_step_ref=True)
    states, ys = kw.pop("initial_states"), []
    for t in range(kw["x"].shape[1]):
        y, states = mamba3_sequential(**along(kw, slice(t, t + 1)), initial_states=states, return_final_states=True)
        ys.append(y)
    assert (torch.cat(ys, 1) - g("step_ref.y")).abs().max().item() < 1e-12
    assert (states[1] - g("step_ref.final_ssm")).abs().max().item() < 1e-12


@pytest.mark.parametrize("case", ["small_dt", "large_dt"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equals_official_forward_reference_within_official_tolerance(official, case, dtype):
    """mamba3_siso_fwd_ref (float32 angles and decays): rtol 1e-4, the official ref-vs-ref bound."""
    kw, g = _fixture_case(official, case)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    kw = {k: (tuple(map(cast, v)) if isinstance(v, tuple) else cast(v)) for k, v in kw.items()}
    y, (theta, ssm, k, v) = mamba3_chunked(**kw, return_final_states=True, chunk_size=16)
    assert official_relative_error(y, g("fwd_ref.y")) < 1e-4
    for ours, name in ((ssm, "ssm"), (k, "k"), (v, "v")):
        assert official_relative_error(ours, g(f"fwd_ref.final_{name}")) < 1e-4, name
    assert angle_gap(theta, g("fwd_ref.final_angle")) < 1e-4
    # and the worst entry, not only the 95th percentile, stays small against the largest output
    assert (y.double() - g("fwd_ref.y")).abs().max().item() < 1e-4 * g("fwd_ref.y").abs().max().item()


def bad(**change):
    kw = make_inputs(l=4)
    kw.update(change)
    return kw


@pytest.mark.parametrize("change, match", [
    (dict(x=torch.zeros(2, 4, 4)), "x must be"),
    (dict(x=torch.zeros(2, 0, 4, 3, dtype=torch.float64)), "at least one token"),
    (dict(B=torch.zeros(2, 4, 3, 8, dtype=torch.float64), C=torch.zeros(2, 4, 3, 8, dtype=torch.float64)),
     "multiple of the number of B/C groups"),
    (dict(C=torch.zeros(2, 4, 2, 6, dtype=torch.float64)), "B and C must both be"),
    (dict(dt=torch.zeros(2, 4, 3, dtype=torch.float64)), "dt must be"),
    (dict(angles=torch.zeros(2, 4, 4, 5, dtype=torch.float64)), "1 <= S <= n/2"),
    (dict(B_bias=torch.zeros(4, 7, dtype=torch.float64)), "B_bias must be"),
    (dict(D=torch.zeros(3, dtype=torch.float64)), "D must be"),
    (dict(z=torch.zeros(2, 4, 4, 2, dtype=torch.float64)), "z must have"),
    (dict(initial_states=(torch.zeros(2, 4, 2),) * 4), "initial ssm state must be"),
    (dict(initial_states=torch.zeros(2)), "initial_states must be a tuple"),
])
@pytest.mark.parametrize("scan", [mamba3_sequential, mamba3_chunked])
def test_bad_inputs_raise_clear_errors(change, match, scan):
    with pytest.raises(ValueError, match=match):
        scan(**bad(**change))


def test_bad_types_and_chunk_size():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mamba3_sequential(**bad(x=[[1.0]]))
    for q in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            mamba3_chunked(**make_inputs(l=4), chunk_size=q)
    with pytest.raises(TypeError, match="return_final_states must be a bool"):
        mamba3_chunked(**make_inputs(l=4), return_final_states=1)
