"""Every refusal of the de-identification library: a ``DeidentifyError`` naming what is wrong.

A refusal releases nothing: transforms validate their inputs and parameters before they compute,
and return a frame only when every check held. The broker maps these to its own error family.
"""

from __future__ import annotations


class DeidentifyError(ValueError):
    """Base of every refusal; the message says what to change."""


class MissingColumns(DeidentifyError):
    """A frame lacks a column the transform needs (or has one of the wrong kind)."""


class InvalidParameter(DeidentifyError):
    """A parameter is out of range: ε ≤ 0 or above the ceiling, k < 2, missing bounds..."""


class InvalidData(DeidentifyError):
    """The data itself cannot be released as asked: negative readings, an empty group..."""


class UnknownTier(DeidentifyError):
    """A tier name that is not raw, pseudonymised, generalised, aggregated or dp."""


class DifferencingRefused(DeidentifyError):
    """The release overlaps an earlier one to the same recipient and differs from it by fewer
    members than the threshold: together they would give back a household's data."""


class BudgetExceeded(DeidentifyError):
    """The release would spend more privacy budget than the recipient has left."""
