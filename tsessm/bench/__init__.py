"""Benchmark suites behind `tsessm bench` and pipelines/benchmark_*.py."""
