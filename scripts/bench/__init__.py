"""Helpers of scripts/bench_dataplane.py (processes, backend, HAProxy, Isthmus, load)."""
