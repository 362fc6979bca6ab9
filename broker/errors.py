"""One error family: every expected failure is a ``BrokerError`` with a message and a status.

The CLI prints ``error: <message>`` and exits with ``exit_code``; the API answers
``{"error": <class name>, "detail": <message>}`` with ``status_code``. A bug is not a
``BrokerError`` and stays a crash (500), never a vague 4xx.
"""

from __future__ import annotations


class BrokerError(Exception):
    status_code = 400
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(BrokerError):
    """Settings or files on disk are missing, unsafe or malformed."""

    status_code = 500
    exit_code = 2


class StorageUnavailable(BrokerError):
    """The database cannot be reached or is not initialised."""

    status_code = 503
    exit_code = 3


class KeyError_(BrokerError):
    """A key is missing, damaged, or was destroyed."""

    status_code = 500
    exit_code = 4


class NotFound(BrokerError):
    status_code = 404


class Forbidden(BrokerError):
    status_code = 403


class PayloadTooLarge(BrokerError):
    status_code = 413


class UnsupportedMediaType(BrokerError):
    status_code = 415


class Throttled(BrokerError):
    """Over a rate limit (429) or the queue is full (503): try again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int, status_code: int = 429) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status_code = status_code
        self.headers = {"Retry-After": str(retry_after_s)}
