"""The release pipeline: facts → decision → consent-scoped readings → tier transform
→ serialise → deliver → one audit entry; formats and pull feeds."""
