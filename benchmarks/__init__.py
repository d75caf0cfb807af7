"""Benchmark scripts (``python -m benchmarks.bench_scan`` ...); see ``benchmarks/README.md``."""
