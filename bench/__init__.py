"""Benchmarks: commands that print figures and write result tables under ``bench/results/``."""
