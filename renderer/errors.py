"""The renderer's typed errors; each message is the one line an operator reads."""

from agentkit.errors import AgentError, ConfigError, ConsulDenied, ConsulUnavailable  # noqa: F401


class RendererError(AgentError):
    """Base of the renderer's own failures."""


class TemplateError(RendererError):
    """A template failed to load or render; names the file and the line."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}" if line else path
        super().__init__(f"template {where}: {message}")

    def __reduce__(self):  # crosses from the render child to the daemon (pickle)
        return type(self), (self.path, self.line, self.message)


class CatalogFileError(RendererError):
    """A --catalog snapshot file is unreadable or malformed."""


class CommandFailed(RendererError):
    """The check or reload command failed; carries its most telling output line."""

    def __init__(self, what: str, command: str, detail: str):
        self.what, self.command, self.detail = what, command, detail
        super().__init__(f"{what} failed ({command}): {detail}")


class WriteFailed(RendererError):
    """An output file could not be written or restored."""


class ReloadNotTaken(RendererError):
    """nginx was signalled but did not load the new configuration; carries nginx's own line."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


class AcmeFailure(Exception):
    """An order, an account or the ACME directory that did not work out; the message says which and why."""
