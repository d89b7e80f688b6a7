"""administration, care programme and screening

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 05:36:48.374617
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "screening_rounds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("instrument", sa.String(length=64), nullable=False),
        sa.Column("school_year", sa.String(length=9), nullable=False),
        sa.Column("opens_on", sa.Date(), nullable=False),
        sa.Column("closes_on", sa.Date(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["school_id"], ["schools.id"], name=op.f("fk_screening_rounds_school_id_schools")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_rounds")),
    )
    with op.batch_alter_table("screening_rounds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_screening_rounds_school_id"), ["school_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_screening_rounds_school_year"), ["school_year"], unique=False
        )

    op.create_table(
        "visit_requirements",
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("school_year", sa.String(length=9), nullable=False),
        sa.Column("class_teacher_visits", sa.Integer(), nullable=False),
        sa.Column("mentor_visits", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["school_id"], ["schools.id"], name=op.f("fk_visit_requirements_school_id_schools")
        ),
        sa.PrimaryKeyConstraint("school_id", "school_year", name=op.f("pk_visit_requirements")),
    )
    op.create_table(
        "screening_round_classes",
        sa.Column("round_id", sa.Uuid(), nullable=False),
        sa.Column("class_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["class_id"], ["classes.id"], name=op.f("fk_screening_round_classes_class_id_classes")
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["screening_rounds.id"],
            name=op.f("fk_screening_round_classes_round_id_screening_rounds"),
        ),
        sa.PrimaryKeyConstraint("round_id", "class_id", name=op.f("pk_screening_round_classes")),
    )
    op.create_table(
        "case_files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.LargeBinary(), nullable=False),
        sa.Column("opened_on", sa.LargeBinary(), nullable=False),
        sa.Column("open_reason", sa.LargeBinary(), nullable=False),
        sa.Column("closed_on", sa.LargeBinary(), nullable=True),
        sa.Column("close_reason", sa.LargeBinary(), nullable=True),
        sa.Column("support_plan", sa.LargeBinary(), nullable=True),
        sa.Column("review_on", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_case_files_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_files")),
        sa.UniqueConstraint("code", name=op.f("uq_case_files_code")),
    )
    with op.batch_alter_table("case_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_files_student_id"), ["student_id"], unique=False)

    op.create_table(
        "emergency_grants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.LargeBinary(), nullable=False),
        sa.Column("review_note", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["reviewed_by"], ["users.id"], name=op.f("fk_emergency_grants_reviewed_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["schools.id"], name=op.f("fk_emergency_grants_school_id_schools")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_emergency_grants_student_id_students")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_emergency_grants_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emergency_grants")),
    )
    with op.batch_alter_table("emergency_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_emergency_grants_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_emergency_grants_school_id"), ["school_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_emergency_grants_student_id"), ["student_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_emergency_grants_user_id"), ["user_id"], unique=False)

    op.create_table(
        "home_visits",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("school_year", sa.String(length=9), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("visited_on", sa.LargeBinary(), nullable=False),
        sa.Column("mode", sa.LargeBinary(), nullable=False),
        sa.Column("notes", sa.LargeBinary(), nullable=False),
        sa.Column("participant_ids", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_home_visits_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_home_visits_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_home_visits")),
    )
    with op.batch_alter_table("home_visits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_home_visits_author_id"), ["author_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_home_visits_school_year"), ["school_year"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_home_visits_student_id"), ["student_id"], unique=False)

    op.create_table(
        "screening_consents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("round_id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("recorded_by", sa.Uuid(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.LargeBinary(), nullable=False),
        sa.Column("guardian_name", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_on", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["screening_rounds.id"],
            name=op.f("fk_screening_consents_round_id_screening_rounds"),
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_screening_consents_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_consents")),
    )
    with op.batch_alter_table("screening_consents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_screening_consents_round_id"), ["round_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_screening_consents_student_id"), ["student_id"], unique=False
        )

    op.create_table(
        "screening_results",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("round_id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("imported_by", sa.Uuid(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("administered_on", sa.LargeBinary(), nullable=False),
        sa.Column("answers", sa.LargeBinary(), nullable=False),
        sa.Column("total", sa.LargeBinary(), nullable=True),
        sa.Column("scales", sa.LargeBinary(), nullable=False),
        sa.Column("band", sa.LargeBinary(), nullable=False),
        sa.Column("flags", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.LargeBinary(), nullable=False),
        sa.Column("review", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["screening_rounds.id"],
            name=op.f("fk_screening_results_round_id_screening_rounds"),
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_screening_results_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_results")),
    )
    with op.batch_alter_table("screening_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_screening_results_expires_on"), ["expires_on"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_screening_results_round_id"), ["round_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_screening_results_student_id"), ["student_id"], unique=False
        )

    op.create_table(
        "transfer_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("to_school_id", sa.Uuid(), nullable=False),
        sa.Column("to_class_id", sa.Uuid(), nullable=False),
        sa.Column("national_id", sa.LargeBinary(), nullable=False),
        sa.Column("national_id_bidx", sa.LargeBinary(length=8), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=True),
        sa.Column("from_school_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["users.id"], name=op.f("fk_transfer_requests_decided_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["from_school_id"],
            ["schools.id"],
            name=op.f("fk_transfer_requests_from_school_id_schools"),
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"], ["users.id"], name=op.f("fk_transfer_requests_requested_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_transfer_requests_student_id_students")
        ),
        sa.ForeignKeyConstraint(
            ["to_class_id"], ["classes.id"], name=op.f("fk_transfer_requests_to_class_id_classes")
        ),
        sa.ForeignKeyConstraint(
            ["to_school_id"], ["schools.id"], name=op.f("fk_transfer_requests_to_school_id_schools")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer_requests")),
    )
    with op.batch_alter_table("transfer_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transfer_requests_from_school_id"), ["from_school_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_transfer_requests_national_id_bidx"), ["national_id_bidx"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_transfer_requests_student_id"), ["student_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_transfer_requests_to_school_id"), ["to_school_id"], unique=False
        )

    op.create_table(
        "care_categories",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("category", sa.LargeBinary(), nullable=False),
        sa.Column("since", sa.LargeBinary(), nullable=False),
        sa.Column("details", sa.LargeBinary(), nullable=True),
        sa.Column("review_on", sa.LargeBinary(), nullable=True),
        sa.Column("ended_on", sa.LargeBinary(), nullable=True),
        sa.Column("end_reason", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case_files.id"], name=op.f("fk_care_categories_case_id_case_files")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_care_categories_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_categories")),
    )
    with op.batch_alter_table("care_categories", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_care_categories_case_id"), ["case_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_care_categories_student_id"), ["student_id"], unique=False
        )

    op.create_table(
        "counseling_notes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("result_id", sa.Uuid(), nullable=True),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("school_year", sa.String(length=9), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_counseling_notes_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case_files.id"], name=op.f("fk_counseling_notes_case_id_case_files")
        ),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["screening_results.id"],
            name=op.f("fk_counseling_notes_result_id_screening_results"),
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_counseling_notes_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_counseling_notes")),
    )
    with op.batch_alter_table("counseling_notes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_counseling_notes_school_year"), ["school_year"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_counseling_notes_student_id"), ["student_id"], unique=False
        )

    op.create_table(
        "guidance_notes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("school_year", sa.String(length=9), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_guidance_notes_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case_files.id"], name=op.f("fk_guidance_notes_case_id_case_files")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_guidance_notes_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guidance_notes")),
    )
    with op.batch_alter_table("guidance_notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_guidance_notes_case_id"), ["case_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_guidance_notes_school_year"), ["school_year"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_guidance_notes_student_id"), ["student_id"], unique=False
        )

    op.create_table(
        "pairings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mode", sa.LargeBinary(), nullable=False),
        sa.Column("goals", sa.LargeBinary(), nullable=False),
        sa.Column("starts_on", sa.LargeBinary(), nullable=False),
        sa.Column("ends_on", sa.LargeBinary(), nullable=True),
        sa.Column("end_reason", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case_files.id"], name=op.f("fk_pairings_case_id_case_files")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_pairings_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairings")),
    )
    with op.batch_alter_table("pairings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pairings_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_pairings_student_id"), ["student_id"], unique=False)

    op.create_table(
        "support_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("school_year", sa.String(length=9), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurred_on", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.LargeBinary(), nullable=False),
        sa.Column("notes", sa.LargeBinary(), nullable=False),
        sa.Column("follow_up_on", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_support_logs_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case_files.id"], name=op.f("fk_support_logs_case_id_case_files")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_support_logs_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_logs")),
    )
    with op.batch_alter_table("support_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_support_logs_author_id"), ["author_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_support_logs_case_id"), ["case_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_support_logs_school_year"), ["school_year"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_support_logs_student_id"), ["student_id"], unique=False
        )

    op.create_table(
        "tasks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("assignee_id", sa.Uuid(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("kind", sa.LargeBinary(), nullable=False),
        sa.Column("due_on", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["assignee_id"], ["users.id"], name=op.f("fk_tasks_assignee_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case_files.id"], name=op.f("fk_tasks_case_id_case_files")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_tasks_student_id_students")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_assignee_id"), ["assignee_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_student_id"), ["student_id"], unique=False)

    op.create_table(
        "pairing_mentors",
        sa.Column("pairing_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("student_id", sa.Uuid(), nullable=False),
        sa.Column("is_lead", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pairing_id"], ["pairings.id"], name=op.f("fk_pairing_mentors_pairing_id_pairings")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_pairing_mentors_student_id_students")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_pairing_mentors_user_id_users")
        ),
        sa.PrimaryKeyConstraint("pairing_id", "user_id", name=op.f("pk_pairing_mentors")),
    )
    with op.batch_alter_table("pairing_mentors", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pairing_mentors_student_id"), ["student_id"], unique=False
        )

    with op.batch_alter_table("auth_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=8), server_default="api", nullable=False)
        )
        batch_op.add_column(sa.Column("client_addr", sa.String(length=45), nullable=True))

    with op.batch_alter_table("classes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_class_id", sa.Uuid(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_classes_previous_class_id"), ["previous_class_id"], unique=True
        )
        batch_op.create_index(batch_op.f("ix_classes_school_year"), ["school_year"], unique=False)

    with op.batch_alter_table("schools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage", sa.String(length=16), nullable=True))

    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("enrolment", sa.String(length=16), server_default="enrolled", nullable=False)
        )
        batch_op.add_column(sa.Column("left_on", sa.Date(), nullable=True))
        batch_op.create_index(batch_op.f("ix_students_enrolment"), ["enrolment"], unique=False)

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("display_name", sa.String(length=100), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "password_change_required", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(sa.Column("totp_pending_secret", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_changed_at")
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("created_by")
        batch_op.drop_column("totp_pending_secret")
        batch_op.drop_column("password_change_required")
        batch_op.drop_column("display_name")

    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_students_enrolment"))
        batch_op.drop_column("left_on")
        batch_op.drop_column("enrolment")

    with op.batch_alter_table("schools", schema=None) as batch_op:
        batch_op.drop_column("stage")

    with op.batch_alter_table("classes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_classes_school_year"))
        batch_op.drop_index(batch_op.f("ix_classes_previous_class_id"))
        batch_op.drop_column("previous_class_id")

    with op.batch_alter_table("auth_tokens", schema=None) as batch_op:
        batch_op.drop_column("client_addr")
        batch_op.drop_column("kind")

    with op.batch_alter_table("pairing_mentors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pairing_mentors_student_id"))

    op.drop_table("pairing_mentors")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_student_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_assignee_id"))

    op.drop_table("tasks")
    with op.batch_alter_table("support_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_logs_student_id"))
        batch_op.drop_index(batch_op.f("ix_support_logs_school_year"))
        batch_op.drop_index(batch_op.f("ix_support_logs_case_id"))
        batch_op.drop_index(batch_op.f("ix_support_logs_author_id"))

    op.drop_table("support_logs")
    with op.batch_alter_table("pairings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pairings_student_id"))
        batch_op.drop_index(batch_op.f("ix_pairings_case_id"))

    op.drop_table("pairings")
    with op.batch_alter_table("guidance_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_guidance_notes_student_id"))
        batch_op.drop_index(batch_op.f("ix_guidance_notes_school_year"))
        batch_op.drop_index(batch_op.f("ix_guidance_notes_case_id"))

    op.drop_table("guidance_notes")
    with op.batch_alter_table("counseling_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_counseling_notes_student_id"))
        batch_op.drop_index(batch_op.f("ix_counseling_notes_school_year"))

    op.drop_table("counseling_notes")
    with op.batch_alter_table("care_categories", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_care_categories_student_id"))
        batch_op.drop_index(batch_op.f("ix_care_categories_case_id"))

    op.drop_table("care_categories")
    with op.batch_alter_table("transfer_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_requests_to_school_id"))
        batch_op.drop_index(batch_op.f("ix_transfer_requests_student_id"))
        batch_op.drop_index(batch_op.f("ix_transfer_requests_national_id_bidx"))
        batch_op.drop_index(batch_op.f("ix_transfer_requests_from_school_id"))

    op.drop_table("transfer_requests")
    with op.batch_alter_table("screening_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_screening_results_student_id"))
        batch_op.drop_index(batch_op.f("ix_screening_results_round_id"))
        batch_op.drop_index(batch_op.f("ix_screening_results_expires_on"))

    op.drop_table("screening_results")
    with op.batch_alter_table("screening_consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_screening_consents_student_id"))
        batch_op.drop_index(batch_op.f("ix_screening_consents_round_id"))

    op.drop_table("screening_consents")
    with op.batch_alter_table("home_visits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_home_visits_student_id"))
        batch_op.drop_index(batch_op.f("ix_home_visits_school_year"))
        batch_op.drop_index(batch_op.f("ix_home_visits_author_id"))

    op.drop_table("home_visits")
    with op.batch_alter_table("emergency_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_emergency_grants_user_id"))
        batch_op.drop_index(batch_op.f("ix_emergency_grants_student_id"))
        batch_op.drop_index(batch_op.f("ix_emergency_grants_school_id"))
        batch_op.drop_index(batch_op.f("ix_emergency_grants_expires_at"))

    op.drop_table("emergency_grants")
    with op.batch_alter_table("case_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_files_student_id"))

    op.drop_table("case_files")
    op.drop_table("screening_round_classes")
    op.drop_table("visit_requirements")
    with op.batch_alter_table("screening_rounds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_screening_rounds_school_year"))
        batch_op.drop_index(batch_op.f("ix_screening_rounds_school_id"))

    op.drop_table("screening_rounds")
