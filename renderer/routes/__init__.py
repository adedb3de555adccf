"""The route table: what nginx should route, decided from service meta (pure).

``docker run -l SERVICE_TAGS=http -l SERVICE_HOSTS=api.example.org -l
SERVICE_PATH=/v1 ...`` is the whole interface: the registrar turns labels
into meta, and the table says what nginx routes. Every decision is
deterministic, so every nginx node renders the same table.

One concept per module, after fabio's ``route/`` package:

* :mod:`.values` -- what each meta key may hold, one parser per key;
* :mod:`.model` -- the table's frozen values (pools, locations, hosts,
  listeners, refusals) and the options it is built for;
* :mod:`.voting` -- instances that disagree on a route key;
* :mod:`.overrides` -- the operator's route settings in Consul KV
  (overrides and defaults on top of the labels);
* :mod:`.service` -- one HTTP service's own part, from its instances and
  those settings; :mod:`.gateway` -- how its gateway keys (CORS, methods,
  headers, retries) combine;
* :mod:`.hosts` -- hosts assembled from every service's claims, conflicts
  settled by one rule;
* :mod:`.listen_ports` + :mod:`.stream` -- tcp/udp listeners, on the ports
  the operator allows;
* :mod:`.builder` -- the entry point, and what it keeps between builds
  (only what changed is built again); :mod:`.views` -- the table's pools,
  locations and services, updated in place for a few rebuilt hosts;
* :mod:`.report` -- the table for people (``renderer routes``, ``--url``).

May import: :mod:`renderer.catalog` (its data model and certificate set),
:mod:`agentkit.nginx_safe`, :mod:`renderer.errors`. No I/O, no clock.
"""
