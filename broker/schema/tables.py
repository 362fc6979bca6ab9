"""Every table of the broker, gathered so Alembic and tests see one metadata."""

from __future__ import annotations

from sqlmodel import SQLModel

from broker.audit import models as audit_models
from broker.ca import models as ca_models
from broker.consent import models as consent_models
from broker.customers import models as customers_models
from broker.delivery import models as delivery_models
from broker.keys import models as keys_models
from broker.oauth import models as oauth_models
from broker.policy import models as policy_models
from broker.privacy import models as privacy_models
from broker.recipients import models as recipients_models
from broker.release import models as release_models
from connectors.mdms import models as mdms_models

metadata = SQLModel.metadata

__all__ = [
    "audit_models",
    "ca_models",
    "consent_models",
    "customers_models",
    "delivery_models",
    "keys_models",
    "mdms_models",
    "metadata",
    "oauth_models",
    "policy_models",
    "privacy_models",
    "recipients_models",
    "release_models",
]
