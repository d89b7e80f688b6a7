"""Follow-up tasks (动态跟踪): what each user has due and overdue.

Most tasks are not stored: they are derived, per request, from sealed dates of the
records in the caller's reach, decided per student before that student's key is
unwrapped (each key at most once), in a handful of queries whatever the number of
records:

- ``support_follow_up``: the latest support log of an open file carries a follow-up date,
  and the caller wrote it. Writing a later log for the file completes it.
- ``case_review``: the review date of an open file the caller may write to.
- ``category_review``: the review date of a live care category the caller may edit.
- ``home_visit``: visits still owed this school year under the school's requirements,
  for the caller's classes and paired students (``casemgr.care.visits``).

Explicit tasks (``Task`` rows: a screening re-check, an urgent review's immediate task)
are assigned to one user by other features through ``add_task`` and completed with
``complete_task``.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy import or_, select

from casemgr import audit, clock
from casemgr.authz import Permission
from casemgr.care.models import CareCategory, CaseFile, SupportLog, Task
from casemgr.care.schemas import TaskItem
from casemgr.care.services import OPEN, StudentKeys, clean, with_live_key
from casemgr.care.visits import my_visit_duties
from casemgr.context import RequestContext, StudentAccess
from casemgr.crypto.models import DataKey
from casemgr.errors import Conflict, InvalidInput
from casemgr.schoolyear import first_day, next_school_year
from casemgr.students.models import Student

# Kinds of explicit tasks. Screening adds its re-checks and urgent reviews.
TASK_KINDS = ("screening_recheck", "urgent_review", "follow_up")


async def add_task(
    ctx: RequestContext,
    access: StudentAccess,
    *,
    assignee_id: uuid.UUID,
    kind: str,
    due_on: date,
    note: str | None = None,
    case_id: uuid.UUID | None = None,
) -> Task:
    """Assign an explicit task about a student the caller has decided on (``access``).

    The kind, the due date and the note are sealed under the student's key.
    """
    if kind not in TASK_KINDS:
        raise InvalidInput.field("kind", f"must be one of {', '.join(TASK_KINDS)}")
    task = Task(
        id=uuid.uuid4(),
        student_id=access.id,
        case_id=case_id,
        assignee_id=assignee_id,
        created_by=ctx.principal.user_id,
    )
    access.cipher.seal_fields(
        task, kind=kind, due_on=due_on, note=clean("note", note, required=False)
    )
    ctx.session.add(task)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.TASK_CREATE,
        resource_type="task",
        resource_id=task.id,
        access=access,
        detail={"assignee_id": str(assignee_id)},
    )
    return task


async def complete_task(ctx: RequestContext, task_id: uuid.UUID) -> None:
    """Mark one of the caller's explicit tasks done (404 for anyone else's, audited)."""
    task = await ctx.session.get(Task, task_id)
    if task is None or task.assignee_id != ctx.principal.user_id:
        await ctx.require(
            Permission.CASE_READ, resource_type="task", resource_id=task_id, exists=False
        )
    assert task is not None
    access = await ctx.student(
        Permission.CASE_READ, task.student_id, resource_type="task", resource_id=task_id
    )
    if task.done_at is not None:
        raise Conflict("This task is done already.")
    task.done_at = clock.now()
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.TASK_DONE, resource_type="task", resource_id=task.id, access=access
    )


async def my_tasks(ctx: RequestContext) -> list[TaskItem]:
    """The caller's due and overdue tasks, soonest first (see the module docstring)."""
    if not ctx.may_ever(Permission.CASE_READ):
        await ctx.require(Permission.CASE_READ, resource_type="task")
    principal = ctx.principal
    today = clock.today()
    keys = StudentKeys(ctx.crypto)
    items: list[TaskItem] = []

    def task(kind: str, due_on: date, **extra: object) -> TaskItem:
        return TaskItem(kind=kind, due_on=due_on, overdue=due_on < today, **extra)  # type: ignore[arg-type]

    def allowed(perm: Permission, student: Student) -> bool:
        decision = ctx.decide(
            perm, school_id=student.school_id, class_id=student.class_id, student_id=student.id
        )
        # Emergency access is for the moment, not a standing duty.
        return decision.allowed and not decision.emergency

    # Students whose files the caller may act on: own classes, paired students, and the
    # schools where a role reaches every file; decided one by one below.
    reach = []
    if principal.class_ids:
        reach.append(Student.class_id.in_(principal.class_ids))
    if principal.paired_student_ids:
        reach.append(Student.id.in_(principal.paired_student_ids))
    schools = ctx.authorizer.schools_holding(principal, Permission.CASE_WRITE)
    if schools:
        reach.append(Student.school_id.in_(schools))

    open_cases: dict[uuid.UUID, tuple[CaseFile, Student]] = {}
    if reach:
        rows = (
            await ctx.session.execute(
                with_live_key(
                    select(CaseFile, Student, DataKey.kek_version, DataKey.wrapped).join(
                        Student, Student.id == CaseFile.student_id
                    )
                ).where(or_(*reach))
            )
        ).all()
        for case, student, version, wrapped in rows:
            if not allowed(Permission.CASE_READ, student):
                continue
            cipher = keys.cipher(student.data_key_id, version, wrapped)
            if cipher.open_field(case, "status") != OPEN:
                continue
            open_cases[case.id] = (case, student)
            if allowed(Permission.CASE_WRITE, student):
                items.append(
                    task(
                        "case_review",
                        cipher.open_field(case, "review_on"),
                        case_id=case.id,
                        student_id=student.id,
                    )
                )

        # Category reviews: live categories of students whose categories the caller edits.
        category_rows = (
            await ctx.session.execute(
                with_live_key(
                    select(CareCategory, Student, DataKey.kek_version, DataKey.wrapped).join(
                        Student, Student.id == CareCategory.student_id
                    )
                ).where(or_(*reach))
            )
        ).all()
        for record, student, version, wrapped in category_rows:
            if not allowed(Permission.CARE_CATEGORY_WRITE, student):
                continue
            cipher = keys.cipher(student.data_key_id, version, wrapped)
            values = cipher.open_fields(record, "ended_on", "review_on")
            if values["ended_on"] is None and values["review_on"] is not None:
                items.append(
                    task(
                        "category_review",
                        values["review_on"],
                        case_id=record.case_id,
                        student_id=student.id,
                    )
                )

    # Support follow-ups: the latest log of each open file the caller has written to.
    mine = select(SupportLog.case_id).where(SupportLog.author_id == principal.user_id)
    latest: dict[uuid.UUID, SupportLog] = {}
    for log in await ctx.session.scalars(
        select(SupportLog).where(SupportLog.case_id.in_(mine)).order_by(SupportLog.created_at)
    ):
        if log.case_id in open_cases:
            latest[log.case_id] = log  # ordered: the last one written wins
    for case_id, log in latest.items():
        case, student = open_cases[case_id]
        if log.author_id != principal.user_id or not allowed(Permission.SUPPORT_LOG_WRITE, student):
            continue
        # Every open file's key was unwrapped above, after its decision.
        cipher = keys.known(student.data_key_id)
        follow_up_on = cipher.open_field(log, "follow_up_on")
        if follow_up_on is not None:
            items.append(
                task("support_follow_up", follow_up_on, case_id=case_id, student_id=student.id)
            )

    # Home visits still owed this school year, due by its last day.
    duties, years = await my_visit_duties(ctx)
    for duty in duties:
        if duty.remaining:
            year = years[duty.school_id]
            items.append(
                task(
                    "home_visit",
                    first_day(next_school_year(year)) - timedelta(days=1),
                    student_id=duty.student_id,
                    remaining=duty.remaining,
                )
            )

    # Explicit tasks assigned to the caller, for students still in reach.
    explicit = (
        await ctx.session.execute(
            with_live_key(
                select(Task, Student, DataKey.kek_version, DataKey.wrapped).join(
                    Student, Student.id == Task.student_id
                )
            ).where(Task.assignee_id == principal.user_id, Task.done_at.is_(None))
        )
    ).all()
    for assigned, student, version, wrapped in explicit:
        if not allowed(Permission.CASE_READ, student):
            continue
        cipher = keys.cipher(student.data_key_id, version, wrapped)
        values = cipher.open_fields(assigned, "kind", "due_on")
        items.append(
            task(
                values["kind"],
                values["due_on"],
                id=assigned.id,
                case_id=assigned.case_id,
                student_id=student.id,
            )
        )

    items.sort(key=lambda t: (t.due_on, t.kind, str(t.student_id)))
    await ctx.audit(audit.Action.TASK_LIST, resource_type="task", detail={"count": len(items)})
    return items
