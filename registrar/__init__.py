"""Registers Docker containers as Consul services."""
