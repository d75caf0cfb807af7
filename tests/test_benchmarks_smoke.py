"""Each benchmark script runs end to end on a tiny size (``MINIMAMBA_QUICK=1``) and writes the
documented JSON. Timings are never asserted: only that every row is a measurement or a status."""

import json

import pytest

from benchmarks import approaches, bench_allocator, bench_model, bench_scan, report


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setenv("MINIMAMBA_QUICK", "1")


def _check_rows(rows):
    assert rows
    for row in rows:
        assert ("ms" in row and row["ms"] > 0 and row["peak_mb"] >= 0) or "status" in row, row
        # a method's error becomes a status row (the run goes on); ours must never have one
        assert not str(row.get("status", "")).startswith("error"), row


def test_scan_benchmark_writes_rows_for_every_method(tmp_path):
    out = tmp_path / "r.json"
    methods = [m for m in bench_scan.DEFAULT_METHODS["cpu"] if m != "ours_compiled"]
    bench_scan.main(["--device", "cpu", "--threads", "1", "--out", str(out), "--methods", *methods,
                     "--dtypes", "float32"])
    data = json.loads(out.read_text())
    rows = data["scan-cpu"]["rows"]
    _check_rows(rows)
    ran = {r["method"] for r in rows if "ms" in r}
    expected = {m for m in methods if approaches.available(approaches.METHODS[m][1] or "")}
    assert ran == expected
    assert data["scan-cpu"]["machine"]["versions"]["torch"]


def test_every_method_computes_the_same_function():
    # The adapters give the peers our bias/softplus/D/gate: all must agree on one input.
    import torch

    inp = bench_scan.make_inputs(1, 19, 4, 3, torch.float64, "cpu", seed=0)
    ref = approaches.sequential(**inp)
    for name, (factory, package, _) in approaches.METHODS.items():
        compiled = ("assoc_scan_compiled", "mamba_ssm_cuda", "ours_compiled",  # and CUDA only:
                    "ours_compiled_parallel_schedule", "ours_compiled_eager_edges",
                    "ours_compiled_cudagraph")
        if name in compiled or not approaches.available(package or ""):  # no compiling here
            continue
        y = factory()(**{k: (v.float() if k not in ("A", "D", "delta_bias") else v.float())
                         for k, v in inp.items()})
        torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4, msg=name)


def test_smoke_runs_without_out_never_write_into_the_committed_results(monkeypatch):
    import tempfile

    import torch

    from benchmarks import common

    monkeypatch.setenv("MINIMAMBA_QUICK", "1")
    assert common.default_out(torch.device("cpu")).startswith(tempfile.gettempdir())
    monkeypatch.setenv("MINIMAMBA_QUICK", "0")
    assert "/benchmarks/results/" in common.default_out(torch.device("cpu")).replace("\\", "/")


def test_cuda_graph_method_refuses_cpu_tensors():
    import torch

    inp = bench_scan.make_inputs(1, 5, 4, 3, torch.float32, "cpu", seed=0)
    with pytest.raises(ValueError, match="CUDA"):
        approaches.METHODS["ours_compiled_cudagraph"][0]()(**inp)


def test_model_benchmark_writes_rows(tmp_path):
    out = tmp_path / "r.json"
    bench_model.main(["--device", "cpu", "--threads", "1", "--out", str(out),
                      "--libs", "ours", "transformers", "mambapy", "ours_mamba2", "transformers_mamba2"])
    rows = json.loads(out.read_text())["model-cpu"]["rows"]
    assert [r["lib"] for r in rows if "status" not in r][0] == "ours"
    for row in rows:
        assert "train_tokens_per_s" in row or "status" in row, row
    assert {"ours_mamba2", "transformers_mamba2"} <= {r["lib"] for r in rows if "train_tokens_per_s" in r}


def test_report_renders_tables_and_plots(tmp_path):
    out = tmp_path / "r.json"
    bench_scan.main(["--device", "cpu", "--threads", "1", "--out", str(out), "--methods",
                     "ours_eager", "ours_loop_reference", "--dtypes", "float32"])
    written = report.main([str(out), "--plots", str(tmp_path)])
    assert any(p.endswith(".png") for p in written)
    assert "| ours_eager |" in (tmp_path / "tables.md").read_text()


@pytest.mark.parametrize("variant", ["in_loop", "stacked", "in_loop_one_block"])
def test_backward_variants_benchmark_compiles_checks_and_times(tmp_path, variant):
    import dataclasses

    from minimamba_core import fast_scan

    from benchmarks import bench_backward

    before = (fast_scan.chunk_ops.chunk_backward_functional, dataclasses.asdict(fast_scan.settings))
    out = tmp_path / "r.json"
    rows = bench_backward.main(["--device", "cpu", "--variant", variant, "--out", str(out)])
    if rows[0]["compile_failures"]:  # it then timed the eager fallback, not the variant
        pytest.skip(f"compiler unavailable here: {rows[0]['compile_failures']}")
    assert rows[0]["max_rel_grad_err"] < 1e-4  # the variant computes the eager scan's gradients
    assert json.loads(out.read_text())["backward-cpu"]["rows"][0]["fwd+bwd"]["ms"] > 0
    assert (fast_scan.chunk_ops.chunk_backward_functional,
            dataclasses.asdict(fast_scan.settings)) == before  # restored, every setting
    assert not fast_scan.scan_compile_enabled()


def test_allocator_benchmark_runs_fresh_processes(tmp_path):
    out = tmp_path / "r.json"
    bench_allocator.main(["--threads", "1", "--out", str(out), "--methods", "ours_eager",
                          "--modes", "fwd"])
    rows = json.loads(out.read_text())["allocator-cpu"]["rows"]
    _check_rows(rows)
    assert sorted(r["allocator"] for r in rows) == ["fresh", "primed"]
    assert all(r["minor_faults_per_call"] >= 0 for r in rows)


def test_results_file_keeps_one_row_per_measurement(tmp_path):
    from benchmarks import common

    out = str(tmp_path / "r.json")
    row = dict(method="ours_eager", L=8, dtype="float32", mode="fwd")
    common.write_results(out, "scan-cpu", dict(rows=[dict(row, ms=2.0), dict(row, L=16, ms=3.0)]))
    common.write_results(out, "scan-cpu", dict(rows=[dict(row, ms=1.0)]))  # the same one again
    common.write_results(out, "scan-cpu", dict(rows=[dict(row, L=16, status="skipped: out of time")]))
    rows = json.loads((tmp_path / "r.json").read_text())["scan-cpu"]["rows"]
    assert sorted((r["L"], r["ms"]) for r in rows) == [(8, 1.0), (16, 3.0)]  # replaced; a skip is not
    assert not list(tmp_path.glob("*.tmp-*"))  # written through a temporary file, renamed


def test_ssd_benchmark_writes_rows_and_errors(tmp_path):
    from benchmarks import bench_ssd

    out = tmp_path / "ssd.json"
    bench_ssd.main(["--device", "cpu", "--threads", "1", "--out", str(out)])
    section = json.loads(out.read_text())["ssd-cpu"]
    _check_rows(section["rows"])
    timed = [r for r in section["rows"] if "ms" in r]
    assert {r["method"] for r in timed} == {"ours_eager", "transformers_torch"}
    assert all(r["rel_err_vs_float64"] < 1e-5 for r in timed)  # float32 against the float64 recurrence


def test_kernel_sources_are_imported_without_staying_registered(tmp_path, monkeypatch):
    """The official sources load from ``$MAMBA_SSM_SRC`` bypassing their ``__init__``, and leave no
    ``mamba_ssm`` module behind: left registered, they made transformers take the package for
    installed, and its torch path ran the Triton kernel (benchmarks/README.md, the GPU SSD table)."""
    import sys

    from benchmarks import bench_ssd

    pkg = tmp_path / "mamba_ssm" / "ops" / "triton"
    pkg.mkdir(parents=True)
    (tmp_path / "mamba_ssm" / "__init__.py").write_text("raise ImportError('the CUDA extensions')\n")
    (pkg / "ssd_combined.py").write_text("from mamba_ssm.ops.triton.helper import twice\n"
                                         "def mamba_chunk_scan_combined(x, *a, **k):\n    return twice(x)\n")
    (pkg / "helper.py").write_text("def twice(x):\n    return 2 * x\n")
    (tmp_path / "VERSION").write_text("state-spaces/mamba test-tree\n")
    monkeypatch.setenv("MAMBA_SSM_SRC", str(tmp_path))
    kernel = bench_ssd.METHODS["mamba_ssm_triton"]()
    assert kernel(3, None, None, None, None, None, None, 64) == 6
    assert not [name for name in sys.modules if name.split(".")[0] == "mamba_ssm"]
    assert bench_ssd.source_version() == "state-spaces/mamba test-tree"
