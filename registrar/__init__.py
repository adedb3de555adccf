"""Registers Docker containers as Consul services, as a reconciler.

The data path reads off the module names, in order:

* :mod:`registrar.docker_source` -- Docker edge: container listing, inspect, the
  event stream (reconnect with backoff, then a full reconciliation);
* :mod:`registrar.labels` -- pure: one inspect payload -> the services it
  wants, by registrator's conventions, plus warnings for refused settings;
  its parts are :mod:`registrar.service_settings` (the ``SERVICE_*``
  settings and their ports), :mod:`registrar.ports` (address and port),
  :mod:`registrar.checks` (Consul checks) and :mod:`registrar.tag_template`
  (``--tags``);
* :mod:`registrar.stopping` -- pure: which ``kill`` events ask a container to
  stop (its services are drained until it exits);
* :mod:`registrar.model` -- the plain values: Service, Check, ownership marks,
  the operator's mapping settings;
* :mod:`registrar.desired` -- pure: every container's state -> the desired services;
* :mod:`registrar.reconcile` -- pure: desired vs this host's services in Consul
  -> the registrations and deregistrations that differ, nothing more;
* :mod:`registrar.consul_sink` -- Consul edge: agent register/deregister, TTL
  updates, listing this host's services;
* :mod:`registrar.sync` -- both sides read, the difference written (no
  thread, no timer);
* :mod:`registrar.daemon` -- the loop, one :meth:`~registrar.daemon.Daemon.step`
  at a time: events, resync, Consul restart detection, backoff;
  :mod:`registrar.status` + :mod:`registrar.status_page` +
  :mod:`registrar.metrics` -- what it shows at ``--status-address``;
  :mod:`registrar.config` and :mod:`registrar.cli` -- the operator's edge.

May import: :mod:`agentkit`; nothing of the renderer.
"""
