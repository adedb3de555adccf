"""Renders nginx configuration from the Consul catalog, validates it, reloads nginx and confirms it.

The data path reads off the module names, in order:

* :mod:`renderer.consul_data` + :mod:`renderer.node_dump` -- fetch the whole
  catalog with one query (and KV), decode only what is read;
* :mod:`renderer.watch` -- the blocking-query loop, one thread per query;
* :mod:`renderer.catalog`, :mod:`renderer.kv`, :mod:`renderer.certificates` --
  plain data, checked by :mod:`agentkit.nginx_safe` (what may reach nginx);
* :mod:`renderer.guard` -- holds back a catalog that looks like Consul lost
  its state;
* :mod:`renderer.route_values` + :mod:`renderer.routes` +
  :mod:`renderer.listen_ports` -- pure: the route table services declare with
  meta (:mod:`renderer.route_report` prints and explains it);
* :mod:`renderer.template_api` + :mod:`renderer.templates` -- what templates
  see, and what each render used;
* :mod:`renderer.bounded` -- renders in a forked child with time, output and
  memory limits;
* :mod:`renderer.render_pass` -- what is due, what changed, what failed and
  when to retry;
* :mod:`renderer.peers` (pure) + :mod:`renderer.peer_sync` -- with dynamic
  peers, the route table's pools as the peer table nginx's Lua balancer
  (``lua/renderer_peers.lua``) reads, pushed and confirmed before the render:
  instance changes without a reload;
* :mod:`renderer.apply` + :mod:`renderer.nginx_master` + :mod:`renderer.commands`
  -- stage, check, reload once, confirm nginx took it, put back what it refused;
* :mod:`renderer.daemon` -- the one loop (:mod:`renderer.quiescence`,
  :mod:`renderer.template_files`, :mod:`renderer.loop_state`);
* :mod:`renderer.status` + :mod:`renderer.status_page` + :mod:`renderer.metrics`
  (pure) and :mod:`renderer.status_service` -- what it shows of itself at
  ``--status-address``: the snapshot a pass publishes, the page, Prometheus;
  :mod:`renderer.settings` and :mod:`renderer.cli` -- the operator's edge.
"""
