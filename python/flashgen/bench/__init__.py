"""The standard benchmark: `python -m flashgen.bench` (see ../shared/BENCHMARKS.md)."""
