"""Reproducible benchmarks (`make bench`, i.e. `python -m bench [name ...]`).

Each `bench/<name>_bench.py` module is a subcommand: it exposes `DESCRIPTION` and
`main(argv) -> int`, and prints its figures next to an in-run floor (the same work done by
the simplest thing that could do it on this machine), so the ratio travels between machines.
"""
