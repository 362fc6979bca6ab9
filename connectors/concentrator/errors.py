"""The two ways the concentrator refuses a frame, so a meter knows whether to hold it or drop it.

``SpoolFull`` is back-pressure: the frame was not taken, the meter keeps it and submits it again
later, and nothing is lost. ``InvalidFrame`` is final: no batch can carry that frame.
"""

from __future__ import annotations


class ConcentratorError(Exception):
    """Base of the concentrator's refusals."""


class SpoolFull(ConcentratorError):
    """The spool is at its bound (or cannot be written): hold the frame and submit it later."""


class InvalidFrame(ConcentratorError, ValueError):
    """The frame is empty or too long for any batch; resubmitting it cannot help."""
