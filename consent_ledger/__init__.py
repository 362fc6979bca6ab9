"""Consent events, receipts and the queries "which consents cover this release" (issue 4)."""
