"""Schemas every route shares: the one error shape of the API."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """Every expected failure: the error's class and a message a person can act on."""

    error: str
    detail: str
