"""Renders nginx configuration from the Consul catalog, validates it, reloads nginx and confirms it.

The data path reads off the package names, in order; each package's
docstring says what it owns and what it may import:

* :mod:`renderer.catalog` -- the catalog, KV and certificates as plain data:
  fetched with one blocking query, checked by :mod:`agentkit.nginx_safe`,
  held back when Consul looks reset;
* :mod:`renderer.routes` -- pure: the route table services declare with meta,
  and the operator's route settings in KV change;
* :mod:`renderer.render` -- what templates see, rendered in a bounded child,
  one pass deciding what is due and what changed;
* :mod:`renderer.peers` -- with dynamic peers, the route table's pools pushed
  to nginx's Lua balancer: instance changes without a reload;
* :mod:`renderer.apply` -- stage, check, reload once, confirm nginx took it,
  put back what it refused;
* :mod:`renderer.observe` -- status, page and metrics at ``--status-address``;

and beside the path, :mod:`renderer.certs`: the fleet's certificates, kept in
Consul KV (ordered by the renderer elected issuer) and written into every
node's ``cert_dir``, where the catalog's certificate scan finds them.

At the top: :mod:`renderer.daemon` (the one loop, with
:mod:`renderer.quiescence`), :mod:`renderer.wiring` (what settings become:
the parts the daemon and the one-shot commands share),
:mod:`renderer.settings`, :mod:`renderer.cli`, :mod:`renderer.route_commands`
(``renderer routes``, ``set``, ``unset``), :mod:`renderer.cert_commands`
(``renderer certs``) and :mod:`renderer.command_line`
(what they share): the operator's edge;
:mod:`renderer.errors` (every package may import it). Only the top imports
the packages' downstream neighbours: a package imports what comes before it
on the path, never after (``tests/unit/test_layout.py`` holds it to that).
"""
