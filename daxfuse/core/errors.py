"""The one error type every layer raises: an errno plus a one-line message."""
import errno as _errno
import os


class DaxError(Exception):
    """A refused request, answered to the user as errno and message."""

    def __init__(self, errno: int, message: str):
        super().__init__(errno, message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return f"{_errno.errorcode.get(self.errno, self.errno)}: {self.message}"

    @property
    def strerror(self) -> str:
        return os.strerror(self.errno)


def shown(text: str, limit: int = 40) -> str:
    """User input quoted in a one-line message, cut short if it is long."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"
