"""Every domain's tables in one metadata, and the migrations (Alembic) that build them."""
