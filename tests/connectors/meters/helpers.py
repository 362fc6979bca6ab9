"""Helpers for the meter simulator tests: reading a frame back as the MDMS would."""

from __future__ import annotations

import datetime as dt

import numpy as np

from connectors.dlms import frames, profile
from connectors.meters.keys import MeterKeys

MONDAY = dt.date(2025, 3, 3)
SEED = 20250303


def day_number(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days


def day_s(date: dt.date) -> int:
    return day_number(date) * 86400


def open_profile(frame: bytes, keys: MeterKeys) -> profile.Profile:
    """parse_ciphered -> open_ciphered -> data_notification_body -> decode_body."""
    ciphered = frames.parse_ciphered(frame)
    apdu = frames.open_ciphered(ciphered, keys.encryption_key, keys.authentication_key)
    return profile.decode_body(frames.data_notification_body(apdu))


def counter(frame: bytes) -> int:
    return frames.parse_ciphered(frame).invocation_counter


def quarter_hours(start_s: int, count: int) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    return start_s + 900 * np.arange(1, count + 1, dtype=np.int64)
