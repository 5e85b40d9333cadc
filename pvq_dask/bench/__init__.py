"""Benchmarks behind ``pvq bench``."""
