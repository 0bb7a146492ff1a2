"""Benchmarks: flowpipe side by side with the alternatives (python -m benchmarks)."""
