"""The synthetic tasks (``minimamba_core/training/tasks.py``: Selective Copying, Induction Heads), the LTI
ablation, and the shipped task models (their plots: ``test_viz_training.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import minimamba_core as mm
from minimamba_core.training import IGNORE_INDEX, evaluate, tasks

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "models" / "tasks"


# ---- generators ----------------------------------------------------------------------------

@pytest.mark.parametrize("L,k,V", [(16, 4, 8), (64, 8, 16), (8, 8, 3)])
def test_selective_copying_layout(L, k, V):
    x, y = tasks.selective_copying(32, L, k, V, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, L + k) and x.dtype == y.dtype == torch.long
    assert (x[:, L:] == V - 1).all() and (y[:, :L] == IGNORE_INDEX).all()
    context = x[:, :L]
    assert ((context == 0) | ((context >= 1) & (context <= V - 2))).all()
    for row_x, row_y in zip(context, y[:, L:]):
        data = row_x[row_x != 0]
        assert len(data) == k and torch.equal(data, row_y)  # exactly k data tokens, answered in order


def test_selective_copying_positions_are_random_and_reproducible():
    a = tasks.selective_copying(256, 64, 8, 16, generator=torch.Generator().manual_seed(3))
    b = tasks.selective_copying(256, 64, 8, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    occupied = (a[0][:, :64] != 0).float().mean(0)  # (64,): how often each position holds data
    assert occupied.min() > 0.03 and occupied.max() < 0.30  # spread over the context (mean 8/64)
    # data tokens are uniform over 1..14: each about 1/14 of 2048 draws
    counts = torch.bincount(a[1][:, 64:].flatten(), minlength=16)[1:15].float()
    assert (counts / counts.sum() - 1 / 14).abs().max() < 0.03


def test_induction_heads_layout():
    x, y = tasks.induction_heads(64, 40, 16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (64, 40)
    assert ((x == 15).sum(1) == 2).all() and (x[:, -1] == 15).all()
    assert (y[:, :-1] == IGNORE_INDEX).all()
    p = (x[:, :-1] == 15).float().argmax(1)  # the first trigger
    assert torch.equal(y[:, -1], x[torch.arange(64), p + 1])
    assert (y[:, -1] < 15).all() and p.max() <= 37


@pytest.mark.parametrize("call,match", [
    (lambda: tasks.selective_copying(2, 4, 5, 16), "n_tokens"),
    (lambda: tasks.selective_copying(2, 8, 2, 2), "vocab_size"),
    (lambda: tasks.selective_copying(0, 8, 2, 16), "batch_size"),
    (lambda: tasks.induction_heads(2, 3, 16), "seqlen"),
    (lambda: tasks.make_batch("copying", 2, 8), "task must be one of"),
])
def test_generators_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- the LTI ablation ----------------------------------------------------------------------

@pytest.mark.parametrize("bc", tasks.LTI_BC)
def test_lti_parameters_do_not_depend_on_the_input(bc):
    model = tasks.task_model(16, selective=False, seed=0, lti_bc=bc)
    mixer = model.backbone.layers[1].mixer
    assert isinstance(mixer, tasks.LTIMixer) and not hasattr(mixer, "x_proj")
    with torch.no_grad():
        d1, B1, C1 = mixer.ssm_inputs(torch.randn(2, 9, 128))
        d2, B2, C2 = mixer.ssm_inputs(torch.randn(2, 9, 128))
    assert torch.equal(d1, d2) and torch.equal(B1, B2) and torch.equal(C1, C2)
    assert torch.equal(d1, d1[:1, :1].expand_as(d1))
    s6 = tasks.task_model(16, selective=True, seed=0)
    assert tasks.is_selective(s6) and not tasks.is_selective(model)
    n_bc = 2 * 16 if bc == "shared" else 2 * 128 * 16  # B, C: (N,) each, or (d_inner, N) each
    assert s6.num_parameters() - model.num_parameters() == 2 * (128 * 36 - 4 - n_bc)  # x_proj vs dt, B, C


def test_lti_scan_is_a_convolution():
    """With constant delta, B, C the scan equals y_t = sum_j K_j x_{t-j}, K_j = C A_bar^j B_bar
    (notebook 01's kernel), computed here by explicit powers in float64."""
    torch.manual_seed(0)
    mixer = tasks.task_model(16, selective=False, seed=1, lti_bc="shared").backbone.layers[0].mixer.double()
    with torch.no_grad():
        mixer.A_log.add_(0.3 * torch.randn_like(mixer.A_log))  # not the init's structure
        mixer.C_lti.normal_()
    l = 13
    x = torch.randn(1, l, 128, dtype=torch.float64)
    with torch.no_grad():
        delta, B, C = mixer.ssm_inputs(x)
        A, _, bias = mixer.scan_params()
        y = mm.selective_scan_sequential(x, delta, A, B, C, delta_bias=bias, delta_softplus=True)
        dt = F.softplus(delta[0, 0] + bias)  # (d,)
        A_bar, B_bar = torch.exp(dt[:, None] * A), dt[:, None] * B[0, 0]  # (d, n)
        K = torch.stack([(C[0, 0] * A_bar ** j * B_bar).sum(-1) for j in range(l)], -1)  # (d, l)
        ref = torch.stack([sum(K[:, j] * x[0, t - j] for j in range(t + 1)) for t in range(l)])
    assert torch.allclose(y[0], ref, atol=1e-12)


@pytest.mark.parametrize("selective,bc", [(True, "channel"), (False, "channel"), (False, "shared")])
def test_task_model_forward_equals_step(selective, bc):
    model = tasks.task_model(16, selective=selective, seed=0, lti_bc=bc).eval()
    x, _ = tasks.induction_heads(2, 12, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)
        cache = model.empty_cache(2)
        model(x[:, :5], cache=cache)
        steps = [model.step(x[:, t:t + 1], cache) for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, 1), full[:, 5:], atol=1e-5)


@pytest.mark.parametrize("selective,bc", [(True, "channel"), (False, "channel"), (False, "shared")])
def test_save_and_load_task_model(tmp_path, selective, bc):
    model = tasks.task_model(16, d_model=32, selective=selective, seed=3, lti_bc=bc)
    tasks.save_task_model(model, tmp_path / "m", {"note": "test"})
    loaded, info = tasks.load_task_model(tmp_path / "m")
    assert info == {"note": "test"} and tasks.is_selective(loaded) == selective
    if not selective:
        assert loaded.backbone.layers[0].mixer.bc == bc and loaded.backbone.layers[0].mixer.B_lti.shape == \
            model.backbone.layers[0].mixer.B_lti.shape
        meta = json.loads((tmp_path / "m" / "config.json").read_text())
        assert meta["lti_bc"] == bc
    assert loaded.config == model.config
    sd, ld = model.state_dict(), loaded.state_dict()
    assert sd.keys() == ld.keys() and all(torch.equal(sd[k], ld[k]) for k in sd)
    assert loaded.lm_head.weight is loaded.backbone.embedding.weight  # still tied
    with pytest.raises(FileNotFoundError, match="task checkpoint"):
        tasks.load_task_model(tmp_path / "missing")


def _channel_mixer(seed=0):
    """A float64 per-channel LTI mixer with non-default A, delta, B, C (no init structure to hide behind)."""
    torch.manual_seed(seed)
    mixer = tasks.task_model(16, selective=False, seed=seed, lti_bc="channel").backbone.layers[0].mixer.double()
    with torch.no_grad():
        mixer.A_log.add_(0.3 * torch.randn_like(mixer.A_log))
        mixer.dt_lti.normal_()
        mixer.B_lti.normal_()
        mixer.C_lti.normal_()
    return mixer


def _recurrence(x, mixer, h0=None):
    """Hand-written reference: per channel d and state n, h = exp(dt_d A_dn) h + dt_d B_dn x_t,
    y_t = sum_n C_dn h_n + D_d x_t (no gate), one step at a time in float64 (Gu & Dao 2023, eq. 2)."""
    A = -torch.exp(mixer.A_log)
    dt = F.softplus(mixer.dt_proj.weight @ mixer.dt_lti + mixer.dt_proj.bias)  # (d,)
    b, l, d = x.shape
    h = torch.zeros(b, d, A.shape[1], dtype=x.dtype) if h0 is None else h0.clone()
    ys = []
    for t in range(l):
        for dd in range(d):
            h[:, dd] = torch.exp(dt[dd] * A[dd]) * h[:, dd] + dt[dd] * mixer.B_lti[dd] * x[:, t, dd, None]
        ys.append((h * mixer.C_lti).sum(-1))
    return torch.stack(ys, 1), h


def test_lti_fft_path_equals_the_per_channel_recurrence():
    mixer = _channel_mixer()
    x = torch.randn(2, 37, 128, dtype=torch.float64)
    h0 = torch.randn(2, 128, 16, dtype=torch.float64)
    with torch.no_grad():
        log_A_bar, B_bar, C, _ = mixer.discretized(torch.float64)
        ref, ref_h = _recurrence(x, mixer)
        y, h = tasks.lti_scan_fft(x, log_A_bar, B_bar, C, return_last_state=True)
        assert (y - ref).abs().max() < 1e-10 and (h - ref_h).abs().max() < 1e-10
        ref, ref_h = _recurrence(x, mixer, h0)  # continuing from a state
        y, h = tasks.lti_scan_fft(x, log_A_bar, B_bar, C, h0, return_last_state=True)
        assert (y - ref).abs().max() < 1e-10 and (h - ref_h).abs().max() < 1e-10
        y2, h2 = tasks.lti_scan_sequential(x, torch.exp(log_A_bar), B_bar, C, h0)
        assert (y2 - ref).abs().max() < 1e-10 and (h2 - ref_h).abs().max() < 1e-10
        K = tasks.lti_kernel(log_A_bar, B_bar, C, 5)  # K[d, j] = sum_n C A_bar^j B_bar, by hand at j = 3
        assert (K[:, 3] - (C * torch.exp(log_A_bar) ** 3 * B_bar).sum(-1)).abs().max() < 1e-12


def test_lti_mixer_forward_prefill_continuation_step_and_mask():
    mixer = _channel_mixer(1)
    model = tasks.task_model(16, selective=False, seed=1, lti_bc="channel").double().eval()
    model.backbone.layers[0].mixer.load_state_dict(mixer.state_dict())
    x, _ = tasks.induction_heads(3, 20, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)
        cache = model.empty_cache(3)
        parts = [model(x[:, :7], cache=cache), model(x[:, 7:15], cache=cache)]  # prefill, continuation
        parts += [model.step(x[:, t:t + 1], cache) for t in range(15, 20)]
        assert (torch.cat(parts, 1) - full).abs().max() < 1e-10
        # left padding is skipped: a padded row gives the unpadded row's outputs
        pad = torch.cat([torch.zeros(3, 4, dtype=torch.long), x], 1)
        mask = torch.cat([torch.zeros(3, 4, dtype=torch.bool), torch.ones(3, 20, dtype=torch.bool)], 1)
        padded = model(pad, attention_mask=mask)
        assert (padded[:, 4:] - full).abs().max() < 1e-10
    out = mm.generate(model.float(), x[:1, :10], max_new_tokens=3)
    assert out.shape[-1] == 13


def test_lti_b_c_are_per_channel():
    """Changing channel 5's B (or C) changes channel 5's SSM output and no other channel's."""
    mixer = _channel_mixer(2)
    x = torch.randn(1, 16, 128, dtype=torch.float64)
    with torch.no_grad():
        y0 = tasks.lti_scan_fft(x, *mixer.discretized(torch.float64)[:3])
        for name in ("B_lti", "C_lti"):
            getattr(mixer, name)[5] += 1.0
            y1 = tasks.lti_scan_fft(x, *mixer.discretized(torch.float64)[:3])
            getattr(mixer, name)[5] -= 1.0
            changed = (y1 - y0).abs().amax(dim=(0, 1)) > 1e-9  # (d,)
            assert changed.nonzero().flatten().tolist() == [5]


def test_lti_rejects_unknown_bc():
    with pytest.raises(ValueError, match="lti_bc"):
        tasks.task_model(16, selective=False, lti_bc="diagonal")


# ---- the shipped task models ---------------------------------------------------------------

def test_shipped_selective_copying_models_meet_the_thresholds():
    """The fair ablation (same 2000 steps of batch 256, schedule and seed; per-channel B, C for LTI).

    Thresholds from models/tasks/tasks_eval.json (2048 rows): S6 98.90% +- 0.09, LTI 53.06% +- 0.31;
    with a margin for 256 rows here (a standard error of about 0.3 and 0.9 points): S6 >= 95%,
    LTI <= 60%.
    """
    x, y = tasks.selective_copying(256, 64, 8, 16, generator=torch.Generator().manual_seed(99))
    s6, info = tasks.load_task_model(TASKS_DIR / "sc_s6_64")
    lti, info_lti = tasks.load_task_model(TASKS_DIR / "sc_lti_64")
    assert tasks.is_selective(s6) and not tasks.is_selective(lti)
    assert lti.backbone.layers[0].mixer.bc == "channel"
    assert info["settings"]["seqlen"] == info_lti["settings"]["seqlen"] == 64
    assert info["sequences_seen"] == info_lti["sequences_seen"] == 512_000  # the same budget
    assert info["schedule"] == info_lti["schedule"]
    assert evaluate(s6, x, y, batch_size=256)["accuracy"] >= 0.95
    assert evaluate(lti, x, y, batch_size=256)["accuracy"] <= 0.60


def test_recorded_evaluation_matches_the_shipped_folders():
    """models/tasks/tasks_eval.json (scripts/eval_tasks.py) describes the folders that ship."""
    report = json.loads((TASKS_DIR / "tasks_eval.json").read_text())["models"]
    for key, name in (("models/tasks/sc_s6_64", "sc_s6_64"), ("models/tasks/sc_lti_64", "sc_lti_64"),
                      ("models/tasks/ih_lti", "ih_lti"), ("shipped/ih_s6", "ih_s6")):
        _, info = tasks.load_task_model(TASKS_DIR / name)
        stages = info.get("stages", []) + [info]
        assert report[key]["total_steps"] == sum(st["steps_done"] for st in stages), name
    assert report["models/tasks/sc_s6_64"]["results"]["64"]["accuracy"] >= 0.95
    assert report["models/tasks/sc_lti_64"]["results"]["64"]["accuracy"] <= 0.60


def test_shipped_induction_heads_model_extrapolates():
    """Trained at 256; here checked at 256 and 4x (notebook 09 checks 16x and 64x)."""
    s6, info = tasks.load_task_model(TASKS_DIR / "ih_s6")
    assert info["settings"]["seqlen"] == 256 and info["results"]["accuracy"]["4096"] >= 0.90
    for length, n in ((256, 128), (1024, 64)):
        x, y = tasks.induction_heads(n, length, 16, generator=torch.Generator().manual_seed(length))
        assert evaluate(s6, x, y, batch_size=64, chunk_len=512)["accuracy"] >= 0.95, length


def test_shipped_lti_folders_with_shared_b_c_still_load(tmp_path):
    """Folders written before per-channel B, C: flagged "shared" (or no flag at all) load as such."""
    for name in ("sc_lti_64", "ih_lti"):
        meta = json.loads((TASKS_DIR / name / "config.json").read_text())
        if meta.get("lti_bc", "shared") != "shared":
            continue  # already replaced by a per-channel model
        model, _ = tasks.load_task_model(TASKS_DIR / name)
        assert model.backbone.layers[0].mixer.bc == "shared"
        assert model.backbone.layers[0].mixer.B_lti.shape == (16,)
    model = tasks.task_model(16, d_model=32, selective=False, seed=0, lti_bc="shared")
    folder = tasks.save_task_model(model, tmp_path / "old")
    meta = json.loads((folder / "config.json").read_text())
    del meta["lti_bc"]  # as written before the flag existed
    (folder / "config.json").write_text(json.dumps(meta))
    assert tasks.load_task_model(folder)[0].backbone.layers[0].mixer.bc == "shared"


def _script(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_tasks_gives_s6_and_lti_the_same_budget_and_eval_tasks_reads_them(tmp_path):
    train, ev = _script("train_tasks"), _script("eval_tasks")
    common = ["--task", "induction_heads", "--seqlen", "16", "--steps", "3", "--batch-size", "4",
              "--eval-size", "8", "--eval-every", "2", "--stop-at", "2", "--extrapolate", "--device", "cpu",
              "--no-progress"]
    s6 = train.main(common + ["--out", str(tmp_path / "s6")])
    lti = train.main(common + ["--lti", "--out", str(tmp_path / "lti")])
    for key in ("steps_done", "sequences_seen", "schedule"):
        assert s6[key] == lti[key], key
    assert s6["sequences_seen"] == 12 and lti["settings"]["lti_bc"] == "channel"
    report = ev.main([str(tmp_path / "s6"), str(tmp_path / "lti"), "--out", str(tmp_path / "e.json"),
                      "--ih-rows", "5", "--factors", "1", "2", "--chunk-len", "8", "--device", "cpu"])
    entry = report["models"][str(tmp_path / "lti")]
    assert entry["lti_bc"] == "channel" and entry["total_sequences"] == 12
    assert set(entry["results"]) == {"16", "32"} and entry["results"]["32"]["rows"] == 5
    # chunked (cache carried) per-row accuracies equal the whole-row ones
    model, _ = tasks.load_task_model(tmp_path / "lti")
    x, y = tasks.induction_heads(5, 32, 16, generator=torch.Generator().manual_seed(30_032))
    acc = ev.row_accuracies(model, x, y, batch_size=2, chunk_len=8)
    assert torch.equal(acc, ev.row_accuracies(model, x, y, batch_size=5, chunk_len=64))
    stderr = float(acc.std()) / 5 ** 0.5
    assert entry["results"]["32"]["accuracy"] == round(float(acc.mean()), 4)
    assert entry["results"]["32"]["stderr"] == round(stderr, 4)
