"""Renders nginx configuration from the Consul catalog."""
