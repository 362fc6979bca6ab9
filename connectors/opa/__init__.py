"""OPA as the policy engine: the broker's ``PolicyEngine`` over an OPA server's REST API."""

from connectors.opa.client import OpaServerEngine

__all__ = ["OpaServerEngine"]
