"""Benchmarks (`make bench`): measured side by side with a baseline, never asserted."""
