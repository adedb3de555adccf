"""Rendered files into nginx: stage, check, swap, reload once, confirm nginx took them, put back what it refused.

:mod:`.applier` (the staged set and the put-back rules; :mod:`.journal`
keeps what nginx last confirmed running) runs :mod:`.commands` (``nginx -t``,
``nginx -s reload``, bounded and stoppable) and asks :mod:`.nginx_master`
whether a new generation of workers runs the files.

May import: :mod:`agentkit`, :mod:`renderer.errors`. It knows files and
nginx, not the catalog or templates.
"""
