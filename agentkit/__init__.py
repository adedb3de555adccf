"""What both daemons share: the Consul connection, logging, CLI options, systemd notify.

The registrar and the renderer are separate programs with one operator-facing
contract for these (the same --consul-* flags, the same token rules, the same
log format, the same status endpoint and page frame), so that contract lives
here once; so do the one rule for what may reach nginx (:mod:`.nginx_safe`),
the one atomic file writer (:mod:`.files`) and the one backoff (:mod:`.backoff`).

May import: nothing of ``renderer`` or ``registrar``.
"""
