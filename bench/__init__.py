"""Benchmarks: latency, throughput, fan-out, memory, classifier (see README "Benchmarks")."""
