"""The errors of ``broker.policy``: each a ``BrokerError`` with its status and exit code."""

from __future__ import annotations

from broker.errors import BrokerError


class BundleError(BrokerError):
    """The bundle directory cannot be read as a bundle: clear message, nothing loaded."""

    status_code = 422


class PolicySignatureError(BrokerError):
    """A bundle's signature or file hashes do not match: it is not used."""

    status_code = 500
    exit_code = 4


class NoActivePolicy(BrokerError):
    status_code = 503
    exit_code = 2
