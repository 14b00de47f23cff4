"""Exceptions that are part of the public API."""


class StreamingNotSupported(NotImplementedError):
    """Raised when a model that sees the future (bidirectional) is asked to run step by step."""
