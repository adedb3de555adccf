"""What both daemons share: the Consul connection, logging, CLI options, systemd notify.

The registrar and the renderer are separate programs with one operator-facing
contract for these (the same --consul-* flags, the same token rules, the same
log format), so that contract lives here once.
"""
