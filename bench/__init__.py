"""Benchmarks against the real parts (Consul, nginx) on loopback."""
