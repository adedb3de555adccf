"""The root of every error the daemons raise on purpose.

Each subclass carries a message written for the operator: it names the
culprit (the address, the file, the container) and never contains a token.
The CLI edge prints ``str(error)`` as its one line and exits non-zero.
"""


class AgentError(Exception):
    """An expected failure with an operator-facing message."""


class ConfigError(AgentError):
    """A setting, flag or config file is invalid."""


class ConsulUnavailable(AgentError):
    """Consul could not be reached or answered with a server error."""


class ConsulDenied(AgentError):
    """Consul refused a request for lack of ACL rights (HTTP 403)."""
