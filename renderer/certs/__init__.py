"""Certificates for every nginx node, issued once: ordered by one renderer of the fleet, kept in Consul KV.

A side path beside the route table's: :mod:`.issuer` (the renderer holding
the fleet's lock in Consul orders and renews, through :mod:`.acme_server`,
and writes what it got to KV) -> every renderer's KV watch ->
:mod:`.files` (each certificate written into this node's ``cert_dir``) ->
the certificate directory's scan, which the route table reads as before.
What KV holds, and when a certificate is due, is data
(:mod:`renderer.catalog.kv_certificates`).

May import: :mod:`renderer.catalog`, :mod:`agentkit`, :mod:`renderer.errors`.
"""
