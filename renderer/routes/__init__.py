"""The route table: what nginx should route, decided from service meta (pure).

One concept per module, after fabio's ``route/`` package: :mod:`.values`
(what each meta key may hold) -> :mod:`.table` (the table and the rules
that build it) -> :mod:`.report` (the table for people: ``renderer
routes``, ``--url``).

May import: :mod:`renderer.catalog` (its data model and certificate set),
:mod:`agentkit.nginx_safe`, :mod:`renderer.errors`. No I/O, no clock.
"""
