"""Rendered files into nginx: stage, check, swap, reload once, confirm nginx took them, put back what it refused.

:mod:`.applier` (the staged set, its journal of what nginx last confirmed
running, and the put-back rules) runs :mod:`.commands` (``nginx -t``,
``nginx -s reload``, bounded and stoppable) and asks :mod:`.nginx_master`
whether a new generation of workers runs the files.

May import: :mod:`agentkit`, :mod:`renderer.errors`. It knows files and
nginx, not the catalog or templates.
"""
