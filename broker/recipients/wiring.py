"""Building the recipients service from a runtime: the active purpose catalogue and the
certificate rules of the settings (``recipient_cert_max_days``, ``recipient_cert_max_live``), and
where webhooks may point (``webhook_allow_private``, ``webhook_private_ports``)."""

from __future__ import annotations

from broker.delivery.egress import Egress
from broker.policy.service import active_vocabulary
from broker.recipients.service import CertificateRules, Recipients
from broker.runtime import Runtime


def open_recipients(rt: Runtime, egress: Egress | None = None) -> Recipients:
    """The recipients service every path uses (command line, API, demo): registrations are
    checked against the active revision's purpose catalogue, read at each registration."""
    settings = rt.settings
    rules = CertificateRules(settings.recipient_cert_max_days, settings.recipient_cert_max_live)
    return Recipients(
        rt.audit,
        rt.clock,
        lambda: active_vocabulary(rt.settings, rt.audit, rt.clock).purposes,
        rules,
        egress or Egress.of(rt.settings),
    )
