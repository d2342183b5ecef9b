"""Domain errors: what went wrong and how to fix it, as one line."""


class ConnscopeError(Exception):
    """An expected failure, shown to the user as one line with a fix.

    The CLI prints ``connscope: <message> (fix: <hint>)`` and exits with
    ``exit_code``; it never shows a traceback for these.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = f"connscope: {self.message}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return text.replace("\n", " ")


class UsageError(ConnscopeError):
    """Bad flags or configuration values."""

    exit_code = 2


class PrivilegeError(ConnscopeError):
    """The process lacks a capability it needs."""


class KernelFeatureError(ConnscopeError):
    """The kernel lacks something a required hook needs."""
