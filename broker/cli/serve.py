"""``broker serve``: the HTTPS API over TLS 1.3 with client certificates required, the
customer portal beside it (TLS 1.3, server authenticated; customers sign in), and the push
worker (consent expiry, push feeds, webhook deliveries every ``BROKER_PUSH_POLL_S``) and the
retention job (every ``BROKER_RETENTION_INTERVAL_S``)."""

from __future__ import annotations

from typing import Annotated

import typer

from broker.api.server import build, make_server, start_in_thread
from broker.cli.common import actor, console, runtime
from broker.delivery.service import PushLoop, http_poster
from broker.delivery.settings import PushSettings
from broker.portal.serve import portal_context
from broker.portal.web import portal_app
from broker.recipients.egress import Egress
from broker.retention.service import open_retention
from broker.retention.worker import RetentionLoop
from broker.runtime.wiring import open_ca, open_feeds, open_push, server_identity


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default BROKER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default BROKER_PORT).")] = None,
    portal_port: Annotated[
        int | None, typer.Option(help="Customer portal port (default BROKER_PORT + 1; 0: none).")
    ] = None,
) -> None:
    """Run the HTTPS API (mutual TLS 1.3, client certificates from the broker's CA), the
    customer portal (sign-in, consent page, the customer's own data) and the push worker."""
    with runtime() as rt:
        served = build(rt, actor())
        bind, at = host or rt.settings.host, port or rt.settings.port
        portal_at = at + 1 if portal_port is None else portal_port
        console.print(f"serving https://{bind}:{at} (TLS 1.3, client certificate required)")
        with served.keeper:
            if portal_at:
                portal = make_server(portal_app(rt), portal_context(rt, actor()), bind, portal_at)
                start_in_thread(portal)
                console.print(f"customer portal https://{bind}:{portal_at}/me (TLS 1.3)")
            push = PushSettings()
            feeds = open_feeds(rt)
            identity = server_identity(rt, open_ca(rt), actor())
            poster = http_poster(push, identity, Egress.of(rt.settings))
            loop = PushLoop(open_push(rt, feeds, push), poster, push.poll_s).start()
            console.print(f"push worker every {push.poll_s:g} s (webhooks over mutual TLS)")
            every = rt.settings.retention_interval_s
            purge = open_retention(rt.db, rt.audit, rt.clock, rt.settings)
            retention = RetentionLoop(purge, every).start()
            console.print(f"retention job every {every} s (BROKER_RETENTION_*)")
            try:
                make_server(served.app, served.ctx, bind, at).run()
            finally:
                retention.stop()
                loop.stop()
                poster.close()
