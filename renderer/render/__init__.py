"""Templates in, file contents out: what templates see, rendering them bounded, and one render pass.

In order: :mod:`.api` (the functions templates call and the dependencies
each call records) -> :mod:`.loader` (Jinja2 environments, sandboxed, and
what a render read) -> :mod:`.bounded` (renders in a forked child with time,
output and memory limits) -> :mod:`.render_pass` (what is due, what changed,
what failed and when to retry; hands the changed files to
:mod:`renderer.apply`) -> :mod:`.fill` (render, fetch what templates found
missing, render again). :mod:`.template_files` watches the template files
on disk for the loop.

May import: :mod:`renderer.catalog`, :mod:`renderer.routes`,
:mod:`renderer.apply`, :mod:`agentkit`, :mod:`renderer.errors`.
"""
