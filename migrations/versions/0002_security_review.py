"""security review: login throttling, token idle time, audit source address, key versions

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 05:21:51.923710
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_known_clients",
        sa.Column("account_key", sa.LargeBinary(length=16), nullable=False),
        sa.Column("client_key", sa.LargeBinary(length=16), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_key", "client_key", name=op.f("pk_login_known_clients")),
    )
    with op.batch_alter_table("login_known_clients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_known_clients_last_success_at"), ["last_success_at"], unique=False
        )

    op.create_table(
        "login_throttle",
        sa.Column("key", sa.LargeBinary(length=16), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
    )
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_throttle_updated_at"), ["updated_at"], unique=False
        )

    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_failures_at"))
        batch_op.drop_index(batch_op.f("ix_login_failures_key"))

    op.drop_table("login_failures")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_addr", sa.String(length=45), nullable=True))

    with op.batch_alter_table("auth_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("key_rotations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="kek", nullable=False)
        )
        batch_op.drop_constraint(batch_op.f("uq_key_rotations_target_version"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_key_rotations_kind_target_version"), ["kind", "target_version"]
        )

    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bidx_version", sa.Integer(), server_default="1", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.drop_column("bidx_version")

    with op.batch_alter_table("key_rotations", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_key_rotations_kind_target_version"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_key_rotations_target_version"), ["target_version"]
        )
        batch_op.drop_column("kind")

    with op.batch_alter_table("auth_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_column("client_addr")

    op.create_table(
        "login_failures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.LargeBinary(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failures_key"), ["key"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_failures_at"), ["at"], unique=False)

    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_throttle_updated_at"))

    op.drop_table("login_throttle")
    with op.batch_alter_table("login_known_clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_known_clients_last_success_at"))

    op.drop_table("login_known_clients")
