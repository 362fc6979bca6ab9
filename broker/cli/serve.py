"""``broker serve``: the HTTPS API over TLS 1.3 with client certificates (filled in by the CA work)."""

from __future__ import annotations


def serve() -> None:
    """Run the HTTPS API."""
    raise SystemExit("not built yet")
