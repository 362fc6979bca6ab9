"""Storage: engines and sessions over SQLite (embedded default) and PostgreSQL, raw writes, and
the guard on what may be stored."""
