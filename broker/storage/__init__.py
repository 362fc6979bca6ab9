"""Storage: SQLModel over SQLite (embedded default) and PostgreSQL, with Alembic migrations."""
