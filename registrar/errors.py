"""The registrar's own failures, under agentkit's one hierarchy."""

from agentkit.errors import AgentError, ConsulDenied, ConsulUnavailable  # noqa: F401 (re-exported)


class DockerUnavailable(AgentError):
    """The Docker engine could not be reached or failed a request."""


class ServiceRefused(AgentError):
    """Consul refused one service definition (the others go on)."""
