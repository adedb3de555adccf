"""The connection to Consul: address and token resolution, and a safe client.

python-consul2 is used for its endpoint wrappers, with two of its habits
undone because they break our contract:

* it reads ``CONSUL_HTTP_ADDR`` / ``CONSUL_HTTP_TOKEN`` itself and lets them
  override explicit arguments, so ``--consul-addr`` would lose to the
  environment;
* it sends the token as a ``?token=`` query parameter on many endpoints, where
  it ends up in exception texts that quote the URL.

We resolve address and token ourselves (flag > environment > default), send
the token only in the ``X-Consul-Token`` header, and translate transport
errors into :class:`ConsulUnavailable` messages that name the address only.

Consul over HTTPS takes the settings Consul's own CLI reads, from the same
environment variables (``CONSUL_CACERT``, ``CONSUL_CAPATH``,
``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``, ``CONSUL_TLS_SERVER_NAME``,
``CONSUL_HTTP_SSL_VERIFY``, ``CONSUL_HTTP_SSL``) or flags: a CA to verify
the agent with, a client certificate for agents with ``verify_incoming``,
and the name to verify (and send as SNI) when the address is an IP that the
agent's certificate does not name (``consul tls cert create`` names
``server.<dc>.consul``, ``localhost`` and ``127.0.0.1``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import consul
import consul.base
import consul.std
import msgspec
import requests
import requests.adapters

from .errors import ConfigError, ConsulDenied, ConsulUnavailable

DEFAULT_ADDRESS = "127.0.0.1:8500"

_ADDRESS = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})/?$")


@dataclasses.dataclass(frozen=True)
class ConsulAddress:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "ConsulAddress":
        """Parse ``HOST:PORT`` or ``http(s)://HOST:PORT``."""
        match = _ADDRESS.fullmatch(text.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise ConfigError(f"invalid Consul address {text!r}: expected HOST:PORT or http(s)://HOST:PORT")
        return cls(match["scheme"] or "http", match["host"].strip("[]"), int(match["port"]))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def resolve_address(flag: str | None, environ=os.environ) -> ConsulAddress:
    """Flag > CONSUL_HTTP_ADDR > default; ``CONSUL_HTTP_SSL=true`` makes a scheme-less address https."""
    text = flag or environ.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDRESS
    address = ConsulAddress.parse(text)
    if "://" not in text and _truthy(environ.get("CONSUL_HTTP_SSL", ""), "CONSUL_HTTP_SSL"):
        address = dataclasses.replace(address, scheme="https")
    return address


TLS_ENVIRONMENT = {"ca_file": "CONSUL_CACERT", "ca_path": "CONSUL_CAPATH", "cert_file": "CONSUL_CLIENT_CERT",
                   "key_file": "CONSUL_CLIENT_KEY", "server_name": "CONSUL_TLS_SERVER_NAME"}
TLS_FLAGS = {"ca_file": "--consul-cacert", "ca_path": "--consul-capath", "cert_file": "--consul-client-cert",
             "key_file": "--consul-client-key", "server_name": "--consul-tls-server-name"}


@dataclasses.dataclass(frozen=True)
class ConsulTLS:
    """How to verify an agent served over HTTPS, and how to prove who we are to it."""

    ca_file: str | None = None
    ca_path: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    verify: bool = True

    @property
    def requests_verify(self) -> bool | str:
        """requests' ``verify=``; passed with every request, because a session's own is overridden by
        REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment whenever a request gives none."""
        if not self.verify:
            return False
        return self.ca_file or self.ca_path or True

    @property
    def requests_cert(self):
        if not self.cert_file:
            return None
        return (self.cert_file, self.key_file) if self.key_file else self.cert_file

    def configure(self, session: requests.Session) -> None:
        if self.server_name:
            session.mount("https://", _ServerNameAdapter(self.server_name))


def resolve_tls(given: dict, environ=os.environ, origin: str = "flag") -> ConsulTLS:
    """TLS settings: ``given`` (flags, or a file's values) beat the environment, key by key.

    ``given`` maps ``ca_file``, ``ca_path``, ``cert_file``, ``key_file``,
    ``server_name`` and ``skip_verify``; None means "not given".
    """
    values, names = {}, {}
    for key, variable in TLS_ENVIRONMENT.items():
        if given.get(key):
            values[key], names[key] = given[key], TLS_FLAGS[key] if origin == "flag" else f"{origin} {key}"
        elif environ.get(variable):
            values[key], names[key] = environ[variable], variable
    verify = True
    if given.get("skip_verify") is not None:
        verify = not given["skip_verify"]
    elif environ.get("CONSUL_HTTP_SSL_VERIFY"):
        verify = _truthy(environ["CONSUL_HTTP_SSL_VERIFY"], "CONSUL_HTTP_SSL_VERIFY")
    for key in ("ca_file", "cert_file", "key_file"):
        if key in values and not os.access(values[key], os.R_OK):
            raise ConfigError(f"{names[key]} {values[key]}: no such readable file")
    if "ca_path" in values and not os.path.isdir(values["ca_path"]):
        raise ConfigError(f"{names['ca_path']} {values['ca_path']}: no such directory")
    if ("key_file" in values) != ("cert_file" in values):
        given_one = names.get("cert_file") or names.get("key_file")
        raise ConfigError(f"{given_one}: a client certificate needs both its certificate and its key "
                          f"({TLS_FLAGS['cert_file']} and {TLS_FLAGS['key_file']})")
    return ConsulTLS(verify=verify, **values)


def _truthy(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={text!r}: expected true or false")


class _ServerNameAdapter(requests.adapters.HTTPAdapter):
    """Verify (and send as SNI) this name instead of the address's host."""

    def __init__(self, server_name: str):
        self.server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = self.server_name
        kwargs["assert_hostname"] = self.server_name
        super().init_poolmanager(*args, **kwargs)


def resolve_token(token: str | None, token_file: str | None, environ=os.environ) -> str | None:
    """Flag beats environment; a token beats a token file at the same level."""
    if token:
        return token
    if token_file:
        return _read_token_file(token_file)
    if environ.get("CONSUL_HTTP_TOKEN"):
        return environ["CONSUL_HTTP_TOKEN"]
    if environ.get("CONSUL_HTTP_TOKEN_FILE"):
        return _read_token_file(environ["CONSUL_HTTP_TOKEN_FILE"])
    return None


def _read_token_file(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as error:
        raise ConfigError(f"cannot read Consul token file {path}: {error.strerror}") from None
    if not token:
        raise ConfigError(f"Consul token file {path} is empty")
    return token


class Answer(NamedTuple):
    index: int
    body: object
    filtered_by_acls: bool = False


class Consul(consul.std.Consul):
    """python-consul2's client with explicit address and a header-only token."""

    def __init__(self, address: ConsulAddress, token: str | None = None, timeout: float = 10.0,
                 tls: ConsulTLS | None = None):
        super().__init__(host=address.host, port=address.port, scheme=address.scheme)
        self.address = address
        # Undo the environment override and keep the token out of URLs.
        self.token = None
        self.http = self.http_connect(address.host, address.port, address.scheme, timeout=timeout)
        self.tls = tls or ConsulTLS()
        if address.scheme == "https":
            self.tls.configure(self.http.session)
        if token:
            self.http.session.headers["X-Consul-Token"] = token
        if address.is_loopback:
            # The local agent: compressing megabytes only to inflate them again costs both sides CPU.
            self.http.session.headers["Accept-Encoding"] = "identity"

    def get_json(self, path: str, params: dict | None = None, timeout: float | None = None,
                 decode: Callable[[bytes], object] = msgspec.json.decode, absent_ok: bool = False) -> "Answer":
        """GET an endpoint python-consul2 does not wrap; returns (index, decoded body, filtered by ACLs).

        ``decode`` turns the body's bytes into data; the default builds plain
        Python objects, a typed decoder (the renderer's node dump) may build less.
        With ``absent_ok``, a 404 is data (KV's "nothing under this prefix",
        body None); anywhere else a 404 or a body that does not decode means the
        address is not the Consul we expect, and that is an error, never an
        empty answer: an empty catalog would empty nginx.
        """
        with translate_errors(self.address):
            response = self.send("GET", path, params=params, timeout=timeout)
            index = int(response.headers.get("X-Consul-Index", 0))
            # Consul 1.11+: the token hid part of the answer.
            filtered = response.headers.get("X-Consul-Results-Filtered-By-ACLs", "").lower() == "true"
            if response.status_code == 404 and absent_ok:
                return Answer(index, None, filtered)
            if response.status_code == 404:
                raise ConsulUnavailable(f"{self.address} has no {path} (HTTP 404): is it a Consul agent?")
            if response.status_code >= 400:  # decode the body only to explain a failure
                consul.base.CB._status(_as_base_response(response))
        try:
            return Answer(index, decode(response.content), filtered)
        except msgspec.DecodeError as error:
            raise ConsulUnavailable(
                f"the answer of {self.address} to {path} is not what Consul sends: {error}") from None

    def send(self, method: str, path: str, *, params: dict | None = None, json=None, data: bytes | None = None,
             timeout: float | None = None) -> requests.Response:
        """One HTTP request to the agent (transport errors not translated: wrap in translate_errors)."""
        https = self.address.scheme == "https"
        return self.http.session.request(method, f"{self.address}{path}", params=params or {}, json=json, data=data,
                                         timeout=timeout or self.http.timeout,
                                         verify=self.tls.requests_verify if https else True,
                                         cert=self.tls.requests_cert if https else None)

    def close(self) -> None:
        self.http.session.close()


def _as_base_response(response: requests.Response) -> consul.base.Response:
    return consul.base.Response(response.status_code, response.headers, response.text, response.content)


class translate_errors:
    """Context manager turning transport and HTTP errors into our own, token-free."""

    def __init__(self, address: ConsulAddress):
        self.address = address

    def __enter__(self):
        return self

    def __exit__(self, kind, error, _traceback):
        if error is None or not isinstance(error, Exception):
            return False
        if isinstance(error, consul.base.ACLPermissionDenied):
            raise ConsulDenied(f"Consul at {self.address} denied the request: {_first_line(error)}") from None
        if isinstance(error, requests.Timeout):
            raise ConsulUnavailable(f"Consul at {self.address} timed out") from None
        if isinstance(error, requests.RequestException):
            raise ConsulUnavailable(f"cannot reach Consul at {self.address}: {_reason(error)}") from None
        if isinstance(error, consul.base.ConsulException):
            raise ConsulUnavailable(f"Consul at {self.address} failed: {_first_line(error)}") from None
        return False


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _reason(error: requests.RequestException) -> str:
    # requests' messages quote the URL; name only the root cause.
    cause = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause)
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(error, requests.exceptions.SSLError) or "SSL" in type(cause).__name__:
        return "TLS handshake failed: " + _ssl_reason(text)
    if "Name or service not known" in text or "getaddrinfo" in text:
        return "unknown host"
    return type(error).__name__


def _ssl_reason(text: str) -> str:
    """An SSL error as what to check: '[SSL: X] reason (_ssl.c:1006)' -> the reason and the setting."""
    text = re.sub(r"\(_ssl\.c:\d+\)", "", re.sub(r"\[SSL: [A-Z0-9_]+\] ", "", text))
    match = re.search(r"(certificate verify failed[^'\")]*|[a-z0-9]+ alert [a-z ]+|wrong version number"
                      r"|hostname '[^']+' doesn't match (?:either of )?'[^']+'(?:, '[^']+')*)", text)
    reason = (match[1] if match else text.strip(" ()'\"").splitlines()[0][:160]).strip()
    if "alert" in reason and ("certificate" in reason or "unknown ca" in reason):
        return (f"{reason}: Consul wants a client certificate it trusts (verify_incoming): "
                "--consul-client-cert and --consul-client-key, or CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY")
    if "Hostname mismatch" in reason or "IP address mismatch" in reason or "doesn't match" in reason:
        return f"{reason} (--consul-tls-server-name, CONSUL_TLS_SERVER_NAME)"
    if "certificate verify failed" in reason:
        return f"{reason} (--consul-cacert, CONSUL_CACERT)"
    if "wrong version number" in reason:
        return f"{reason}: the agent does not speak HTTPS on this port"
    return reason
