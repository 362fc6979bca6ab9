"""The errors of ``broker.regulator``: each a ``BrokerError`` with its status and exit code."""

from __future__ import annotations

from broker.errors import BrokerError


class BadQuery(BrokerError):
    status_code = 422
