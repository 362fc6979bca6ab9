"""A small domain-free kit (canonical JSON, envelope encryption, clock, keyed hashes, the
text rules of the edges).

It is the only part of ``broker`` that ``consent_ledger`` and ``deidentify`` may import, and it
imports nothing else of ours (import-linter keeps it so).
"""
