"""index mentors by user

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:14:46.431594
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pairing_mentors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pairing_mentors_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pairing_mentors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pairing_mentors_user_id"))
