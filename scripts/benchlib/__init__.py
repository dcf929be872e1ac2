"""Pieces of ``scripts/bench.py``: process plumbing, the ceiling references, and the workers.

Each ``benchlib`` module that drives load is also a worker program
(``python -m benchlib.<module> <command> ...``), started by the bench in a
process of its own so that the thing measured and the thing measuring do not
share a core or an event loop. Workers speak a tiny line protocol on their
standard streams: :mod:`benchlib.procs` describes it.
"""
