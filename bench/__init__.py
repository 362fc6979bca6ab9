"""Benchmarks: each module prints one JSON object (run as `python -m bench.<name>`)."""
