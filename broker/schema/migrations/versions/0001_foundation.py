"""foundation: audit log, data keys, CA certificates

Revision ID: 0001
Revises:
Create Date: 2026-11-24 20:03:34.575066
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "audit_entry",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entry_at_us"), ["at_us"], unique=False)

    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(audit_head, [{"id": 1, "size": 0}])
    op.create_table(
        "audit_node",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "ca_certificate",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        sa.Column("not_before_us", sa.BigInteger(), nullable=False),
        sa.Column("not_after_us", sa.BigInteger(), nullable=False),
        sa.Column("revoked_us", sa.BigInteger(), nullable=True),
        sa.Column("revocation_reason", sa.String(length=40), nullable=True),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("serial"),
        sa.UniqueConstraint("fingerprint_sha256"),
    )
    with op.batch_alter_table("ca_certificate", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ca_certificate_name"), ["name"], unique=False)

    op.create_table(
        "data_key",
        sa.Column("key_ref", sa.String(length=80), nullable=False),
        sa.Column("subject_hash", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kek_id", sa.String(length=80), nullable=True),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("destroyed_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key_ref"),
        sa.UniqueConstraint("subject_hash", "version"),
    )
    with op.batch_alter_table("data_key", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_data_key_subject_hash"), ["subject_hash"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("data_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_key_subject_hash"))

    op.drop_table("data_key")
    with op.batch_alter_table("ca_certificate", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ca_certificate_name"))

    op.drop_table("ca_certificate")
    op.drop_table("audit_node")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entry_at_us"))

    op.drop_table("audit_entry")
    op.drop_table("audit_checkpoint")
