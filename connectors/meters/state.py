"""A simulated fleet saved between commands: what each meter keeps across pushes.

``broker meters simulate`` produces frames a few days at a time and ``broker meters
rotate-keys`` changes meters' keys; between them the meters' counters, registers and keys must
survive, as they do in a real meter. The state file (JSON, created 0600: it holds the meters'
keys) records the fleet's seed and size and, per meter, what differs from a fresh fleet.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from connectors.meters.keys import MeterKeys
from connectors.meters.simulator import Fleet, SimulatedMeter

STATE_FILE = "fleet-state.json"
STATE_VERSION = 1


class FleetStateError(ValueError):
    """The state file is missing, damaged or of another version."""


def _meter_state(m: SimulatedMeter) -> dict[str, Any]:
    return {
        "title": m.system_title.hex().upper(),
        "ic": m.invocation_counter,
        "register_wh": m.register_wh,
        "keys": [
            k.hex() for k in (m.keys.encryption_key, m.keys.authentication_key, m.keys.master_key)
        ],
        "peers": {t.hex(): ic for t, ic in m._peer_counters.items()},
    }


def save_fleet(fleet: Fleet, directory: Path, next_day: dt.date) -> Path:
    """Write the fleet's state atomically into ``directory`` (0600)."""
    body = {
        "version": STATE_VERSION,
        "seed": fleet.seed,
        "meters": len(fleet),
        "interval_s": fleet.interval_s,
        "next_day": next_day.isoformat(),
        "meter_state": [_meter_state(m) for m in fleet.meters],
    }
    path = directory / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return path


def load_fleet(directory: Path) -> tuple[Fleet, dt.date]:
    """The fleet as last saved in ``directory``, and the first day it has not pushed yet."""
    path = directory / STATE_FILE
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise FleetStateError(f"no simulated fleet in {directory} ({STATE_FILE} missing)") from None
    except (OSError, ValueError) as exc:
        raise FleetStateError(f"{path} is not a fleet state: {exc}") from None
    if not isinstance(body, dict) or body.get("version") != STATE_VERSION:
        raise FleetStateError(f"{path} is not a version {STATE_VERSION} fleet state")
    try:
        fleet = Fleet.create(int(body["meters"]), int(body["seed"]), int(body["interval_s"]))
        for meter, saved in zip(fleet.meters, body["meter_state"], strict=True):
            _restore(meter, saved)
        return fleet, dt.date.fromisoformat(body["next_day"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FleetStateError(f"{path} is damaged: {exc}") from None


def _restore(meter: SimulatedMeter, saved: dict[str, Any]) -> None:
    if saved["title"] != meter.system_title.hex().upper():
        raise ValueError(f"meter {saved['title']} is not meter {meter.index} of this fleet")
    ek, ak, mk = (bytes.fromhex(k) for k in saved["keys"])
    meter.keys = MeterKeys(ek, ak, mk)
    meter.invocation_counter = int(saved["ic"])
    meter.register_wh = int(saved["register_wh"])
    meter._peer_counters = {bytes.fromhex(t): int(ic) for t, ic in saved["peers"].items()}


class FleetLink:
    """The head-end's downlink to simulated meters: a request in, the meter's answer out."""

    def __init__(self, fleet: Fleet, sender_title: bytes) -> None:
        self._meters = {m.system_title.hex().upper(): m for m in fleet.meters}
        self._sender = sender_title

    def exchange(self, meter_id: str, request: bytes) -> bytes:
        meter = self._meters.get(meter_id)
        if meter is None:
            raise KeyError(f"meter {meter_id} is not in the simulated fleet")
        return meter.handle(request, self._sender)
