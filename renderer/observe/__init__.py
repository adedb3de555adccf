"""What the renderer shows of itself at ``--status-address``: status, the page, Prometheus metrics.

:mod:`.status` (pure: the snapshot one pass publishes, readiness, the route
change) -> :mod:`.page` (the HTML page) and :mod:`.metrics` (``renderer_*``)
-> :mod:`.service` (the endpoint the loop publishes to; the HTTP server
itself is :mod:`agentkit.status_server`).

May import everything upstream (catalog, routes, render outcomes) to show
it; nothing imports this package but the loop.
"""
