"""Dynamic peers: instance changes reach nginx's Lua balancer without a reload.

:mod:`.table` (pure: the route table's HTTP pools as the peer table) ->
:mod:`.sync` (I/O: the Lua module and the table file on disk, the push to
nginx's local socket and its confirmation) -> :mod:`.coordinator` (the
loop's side: when to push, what nginx holds, retries).
``lua/renderer_peers.lua`` is the nginx side.

May import: :mod:`renderer.routes` (its model), :mod:`agentkit`.
"""
