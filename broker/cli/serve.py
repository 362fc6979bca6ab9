"""``broker serve``: the HTTPS API over TLS 1.3 with client certificates required."""

from __future__ import annotations

from typing import Annotated

import typer

from broker.api.server import build, make_server
from broker.cli.common import actor, console, runtime


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default BROKER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default BROKER_PORT).")] = None,
) -> None:
    """Run the HTTPS API (mutual TLS 1.3, client certificates from the broker's CA)."""
    with runtime() as rt:
        served = build(rt, actor())
        bind, at = host or rt.settings.host, port or rt.settings.port
        console.print(f"serving https://{bind}:{at} (TLS 1.3, client certificate required)")
        with served.keeper:
            make_server(served.app, served.ctx, bind, at).run()
