"""Customers: local accounts, identities linked at OpenID Connect providers, sign-in sessions."""
