"""The data concentrator of the meter -> concentrator -> MDMS path (R1.1: it cannot read what it
carries). ``Concentrator.over_https(mdms_url, ssl_context, ConcentratorConfig(spool_dir=...))``
builds one; see :mod:`connectors.concentrator.concentrator` for what it guarantees."""

from connectors.concentrator.backoff import Backoff
from connectors.concentrator.concentrator import Concentrator
from connectors.concentrator.config import ConcentratorConfig
from connectors.concentrator.errors import ConcentratorError, InvalidFrame, SpoolFull
from connectors.concentrator.https import HttpsMdmsClient
from connectors.concentrator.mdms import (
    BadBatch,
    BatchReport,
    Busy,
    Delivered,
    Failed,
    FrameAnswer,
    MdmsClient,
    Outcome,
    Refused,
)
from connectors.concentrator.status import ConcentratorStatus

__all__ = [
    "Backoff",
    "BadBatch",
    "BatchReport",
    "Busy",
    "Concentrator",
    "ConcentratorConfig",
    "ConcentratorError",
    "ConcentratorStatus",
    "Delivered",
    "Failed",
    "FrameAnswer",
    "HttpsMdmsClient",
    "InvalidFrame",
    "MdmsClient",
    "Outcome",
    "Refused",
    "SpoolFull",
]
