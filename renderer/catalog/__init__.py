"""What the renderer reads: the Consul catalog, KV and the certificate directory, as plain immutable data.

The data path inside, in order: :mod:`.fetch` + :mod:`.node_dump` (one
query for the whole catalog, decoded into only what is read; KV under one
prefix) -> :mod:`.watch` (the blocking-query loop, one thread per query) and
:mod:`.watches` (the loop's watches, following what templates read) ->
:mod:`.from_dump` (a catalog built in proportion to what changed) ->
:mod:`.model` and :mod:`.kv` (plain data, every value checked by
:mod:`agentkit.nginx_safe`) -> :mod:`.guard` (a catalog that looks like
Consul lost its state is held back). :mod:`.certificates` scans the
certificate directory into the same kind of value, and
:mod:`.kv_certificates` reads the certificates and ACME challenges the
fleet keeps in KV; :mod:`.snapshot` is the
file format of ``renderer snapshot`` and ``--catalog``.

May import: :mod:`agentkit`, :mod:`renderer.errors`. Nothing downstream
(routes, templates, nginx) is known here.
"""
