"""What a newer Consul adds to the node dump, put in front of the real 1.8.7 agent.

Only Consul 1.8.7 can be installed here, while users run 1.15-1.21. Their
``/v1/internal/ui/nodes`` keeps its shape with two additions the renderer
must handle (shared/design-notes.md, Consul's agent/ui_endpoint.go):
nodes imported from peered clusters are appended with ``PeerName`` set
(1.13+), and a token that hides entries gets
``X-Consul-Results-Filtered-By-ACLs: true`` (1.11+). This proxy forwards
every request to the real agent (blocking queries included) and adds those
two to the node dump's answer; it also records the query strings it saw.
"""

from __future__ import annotations

import http.server
import json
import threading

import requests


class NewerConsul:
    def __init__(self, agent, imported_nodes: list[dict], filtered_by_acls: bool = True):
        self.agent, self.imported_nodes, self.filtered_by_acls = agent, imported_nodes, filtered_by_acls
        self.queries: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                owner.queries.append(self.path)
                upstream = requests.get(f"{owner.agent.url}{self.path}", timeout=120)
                body, headers = upstream.content, {"X-Consul-Index": upstream.headers.get("X-Consul-Index", "0"),
                                                   "Content-Type": "application/json"}
                if self.path.startswith("/v1/internal/ui/nodes") and upstream.status_code == 200:
                    body = json.dumps(json.loads(body) + owner.imported_nodes).encode()
                    if owner.filtered_by_acls:
                        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
                try:
                    self.send_response(upstream.status_code)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped (a daemon shutting down in the middle of a blocking query)

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "NewerConsul":
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.server.shutdown()
        self.server.server_close()


def imported_node(name: str, peer: str, service: str, address: str, port: int, tags=("http",)) -> dict:
    """A node as Consul 1.13+ appends it for a peered cluster."""
    return {"ID": "", "Node": name, "Address": address, "Datacenter": "dc1", "PeerName": peer,
            "TaggedAddresses": {}, "Meta": {"consul-version": "1.17.0"},
            "Services": [{"ID": f"{service}-1", "Service": service, "Tags": list(tags), "Address": address,
                          "Port": port, "Meta": {}, "PeerName": peer, "Kind": ""}],
            "Checks": [{"Node": name, "CheckID": "serfHealth", "Status": "passing", "ServiceID": "",
                        "PeerName": peer}]}
