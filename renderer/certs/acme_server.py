"""An ACME server (RFC 8555), through certbot's ``acme`` library: the fleet's account, one order, http-01 (I/O).

Why the library rather than our own client: JWS signing, nonces (and the
retry a ``badNonce`` asks for), the order's states and their polling are
what certbot keeps it for, against Let's Encrypt and every other CA.

What the fleet adds is around it (:mod:`.issuer`): the challenge is
published through Consul KV so that every nginx node answers it, and the
order is answered only once they all do.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

import josepy
from acme import challenges, client, crypto_util, errors as acme_errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from renderer.errors import AcmeFailure

log = logging.getLogger("renderer")
USER_AGENT = "consul-nginx-sync-renderer"


def _pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class AcmeServer:
    def __init__(self, directory: str, email: str | None = None, ca_bundle: str | None = None,
                 timeout: float = 30.0):
        self.directory, self.email, self.ca_bundle, self.timeout = directory, email, ca_bundle, timeout

    def new_account_key(self) -> str:
        return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def _client(self, account_key_pem: str) -> tuple[client.ClientV2, josepy.JWKRSA]:
        key = josepy.JWKRSA(key=serialization.load_pem_private_key(account_key_pem.encode(), None))
        net = client.ClientNetwork(key, user_agent=USER_AGENT, verify_ssl=self.ca_bundle or True,
                                   timeout=int(self.timeout))
        try:
            acme = client.ClientV2(client.ClientV2.get_directory(self.directory, net), net=net)
            registration = messages.NewRegistration.from_data(email=self.email, terms_of_service_agreed=True)
            try:
                acme.new_account(registration)
            except acme_errors.ConflictError as existing:  # this key has an account: use it
                net.account = messages.RegistrationResource(uri=existing.location, body=messages.Registration())
        except (acme_errors.Error, messages.Error, OSError, ValueError) as error:
            raise AcmeFailure(f"ACME directory {self.directory}: {_line(error)}") from None
        return acme, key

    def order(self, host: str, account_key_pem: str, publish: Callable[[str, str], None],
              served: Callable[[str, str], None], withdraw: Callable[[str], None]) -> tuple[str, str]:
        """A certificate for ``host``: (chain PEM, key PEM). ``publish(token, key authorization)`` makes
        every nginx answer the challenge, ``served`` returns once they do, ``withdraw(token)`` takes it
        back (always, success or not)."""
        acme, account = self._client(account_key_pem)
        key_pem = _pem(ec.generate_private_key(ec.SECP256R1()))
        tokens = []
        try:
            order = acme.new_order(crypto_util.make_csr(key_pem.encode(), [host]))
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue
                challenge = next((c for c in authorization.body.challenges
                                  if isinstance(c.chall, challenges.HTTP01)), None)
                if challenge is None:
                    raise AcmeFailure(f"{host}: the ACME server offers no http-01 challenge")
                response, validation = challenge.response_and_validation(account)
                token = challenge.chall.encode("token")
                tokens.append(token)
                publish(token, validation)
                served(token, validation)
                acme.answer_challenge(challenge, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.timeout)
            finished = acme.poll_and_finalize(order, deadline)
        except AcmeFailure:
            raise
        except (acme_errors.Error, messages.Error, OSError, ValueError) as error:
            raise AcmeFailure(f"{host}: {_line(error)}") from None
        finally:
            for token in tokens:
                withdraw(token)
        return finished.fullchain_pem, key_pem


def _line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, acme_errors.ValidationError):
        problems = [authz.body.challenges for authz in error.failed_authzrs]
        text = f"validation failed: {problems}"
    return text.splitlines()[0][:300]
