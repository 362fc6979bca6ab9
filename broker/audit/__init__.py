"""The tamper-evident audit log: an RFC 9162 Merkle log with signed checkpoints."""
