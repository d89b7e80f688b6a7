"""Pairings on the case file page and emergency access to a student, through the pages.

Each page: the work done through the same service as the API, a role that may not, a form
without its CSRF token, and another school's record answering exactly as no record.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from casemgr import clock
from casemgr.authz import Role
from tests.care.helpers import add_staff
from tests.web.conftest import as_user
from tests.web.helpers import csrf_of, post_form, sign_in

GOOD_REASON = "学生在校突发身体不适，需要立即联系监护人。"


def count(db: Any, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}")[0][0])  # nosec B608


def pairing_form(world: Any, *mentors: str, mode: str = "one_to_one", **extra: str) -> dict:
    return {
        "mode": mode,
        "mentor_ids": [str(world[m].id) for m in mentors],
        "starts_on": clock.today().isoformat(),
        "goals": "每周一次学业辅导",
        **extra,
    }


# -- pairings ------------------------------------------------------------------------------


def test_class_teacher_sets_up_a_pairing_then_ends_it(client, world, db, case_a1):
    sign_in(client, world["ct_a1"])
    path = f"/cases/{case_a1}"
    html = client.get(path).text
    assert f'action="/cases/{case_a1}/pairings"' in html
    # The mentors offered: the school's teachers, class teachers and counselors only.
    offered = set(re.findall(r'name="mentor_ids" value="([0-9a-f-]{36})"', html))
    expected = {str(world[n].id) for n in ("ct_a1", "teacher_a", "counselor_a")}
    assert offered == expected
    assert str(world["ct_b1"].id) not in html and str(world["leader_a"].id) not in html
    # Reading colleagues' names for the form is audited, naming the student.
    listed = db.execute(
        "SELECT student_id FROM audit_events WHERE action = 'user:list' AND actor_id = :a",
        {"a": db.id(world["ct_a1"].id)},
    )
    assert listed and str(listed[-1][0]).replace("-", "") == str(
        world.students["a1_first"]
    ).replace("-", "")

    response = post_form(
        client, f"{path}/pairings", pairing_form(world, "teacher_a"), from_page=path
    )
    assert response.status_code == 303 and response.headers["location"] == f"{path}?done=pairing"
    html = client.get(response.headers["location"]).text
    assert "结对已建立。" in html and "每周一次学业辅导" in html
    mentors = html.split('id="mentors"', 1)[1].split("</ul>", 1)[0]
    assert "teacher_a" in mentors
    assert count(db, "pairings") == 1
    pairing_id = re.search(r'action="/pairings/([0-9a-f-]{36})/end"', html).group(1)
    assert f'action="/cases/{case_a1}/pairings"' not in html  # one live pairing at a time

    response = post_form(
        client,
        f"/pairings/{pairing_id}/end",
        {"case_id": str(case_a1), "ended_on": clock.today().isoformat(), "reason": "目标已达成"},
        from_page=path,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{path}?done=pairing_ended"
    html = client.get(response.headers["location"]).text
    assert "结对已结束。" in html and "目标已达成" in html
    ended = db.execute("SELECT count(*) FROM pairings WHERE ended_at IS NOT NULL")
    assert ended == [(1,)]


def test_several_mentors_with_a_lead(client, world, db, case_a1):
    sign_in(client, world["counselor_a"])
    path = f"/cases/{case_a1}"
    data = pairing_form(
        world, "teacher_a", "ct_a1", mode="many_to_one", lead_id=str(world["teacher_a"].id)
    )
    response = post_form(client, f"{path}/pairings", data, from_page=path)
    assert response.status_code == 303
    html = client.get(path).text
    mentors = html.split('id="mentors"', 1)[1].split("</ul>", 1)[0]
    assert "teacher_a (牵头)" in mentors and "ct_a1" in mentors
    assert db.execute("SELECT count(*) FROM pairing_mentors WHERE is_lead = :t", {"t": True}) == [
        (1,)
    ]


def test_a_class_teacher_of_another_class_as_mentor_reads_the_file(client, world, db, case_a1):
    """Mentors may be class teachers of other classes: they read the file as mentors do
    (no personal details, no pairing form), not as its class teacher."""
    add_staff(db, world, "ct_a2", Role.CLASS_TEACHER, world.school_a, (world.class_a2,))
    sign_in(client, world["ct_a1"])
    path = f"/cases/{case_a1}"
    assert str(world["ct_a2"].id) in client.get(path).text  # offered as a mentor
    response = post_form(client, f"{path}/pairings", pairing_form(world, "ct_a2"), from_page=path)
    assert response.status_code == 303
    client.cookies.clear()
    sign_in(client, world["ct_a2"])
    response = client.get(path)
    assert response.status_code == 200 and "每周一次学业辅导" in response.text
    assert 'name="mentor_ids"' not in response.text and 'id="student-name"' not in response.text


def test_bad_pairing_forms_show_the_error_and_store_nothing(client, world, db, case_a1):
    sign_in(client, world["ct_a1"])
    path = f"/cases/{case_a1}"
    bad = [
        (pairing_form(world), "请至少选择一名结对教师"),
        (pairing_form(world, "teacher_a", "counselor_a"), "一对一须恰好选择一名结对教师"),
        (pairing_form(world, "teacher_a", mode="many_to_one"), "多对一须选择两名或以上结对教师"),
        (
            pairing_form(world, "teacher_a", "counselor_a", mode="many_to_one"),
            "须为所选的结对教师之一",
        ),
        (pairing_form(world, "ct_b1"), "每名结对教师都须为该生所在学校在职的任课教师"),
        (pairing_form(world, "teacher_a", starts_on=""), "开始日期"),
        (pairing_form(world, "teacher_a", goals=" "), "帮扶目标"),
    ]
    for data, message in bad:
        response = post_form(client, f"{path}/pairings", data, from_page=path)
        assert response.status_code == 422, (data, response.status_code)
        assert message in response.text, data
        assert 'role="alert"' in response.text
    assert count(db, "pairings") == 0
    # Ending: a date in the future, or no reason.
    as_user(db, world["ct_a1"], lambda ctx: _pair(ctx, world, case_a1))
    pairing_id = db.execute("SELECT id FROM pairings")[0][0]
    for data in (
        {"ended_on": (clock.today() + timedelta(days=3)).isoformat(), "reason": "x"},
        {"ended_on": clock.today().isoformat(), "reason": ""},
    ):
        response = post_form(
            client,
            f"/pairings/{uuid.UUID(str(pairing_id))}/end",
            {"case_id": str(case_a1), **data},
            from_page=path,
        )
        assert response.status_code == 422
        assert "结束日期" in response.text or "原因" in response.text
    assert db.execute("SELECT count(*) FROM pairings WHERE ended_at IS NULL") == [(1,)]


async def _pair(ctx: Any, world: Any, case_id: uuid.UUID) -> None:
    from datetime import date

    from casemgr.care import services as care
    from casemgr.care.schemas import PairingIn

    await care.create_pairing(
        ctx,
        case_id,
        PairingIn(
            mode="one_to_one",
            mentor_ids=[world["teacher_a"].id],
            goals="每周一次",
            starts_on=date(2026, 11, 1),
        ),
    )


def test_pairing_forms_refused_to_mentors_other_schools_and_forged_posts(
    client, world, db, case_a1
):
    as_user(db, world["ct_a1"], lambda ctx: _pair(ctx, world, case_a1))
    pairing_id = uuid.UUID(str(db.execute("SELECT id FROM pairings")[0][0]))
    path = f"/cases/{case_a1}"
    # A mentor reads the file but may never set up or end a pairing: no form, 403.
    sign_in(client, world["teacher_a"])
    html = client.get(path).text
    assert "/pairings" not in html and 'name="mentor_ids"' not in html
    end = {"case_id": str(case_a1), "ended_on": clock.today().isoformat(), "reason": "结束"}
    assert post_form(client, f"/pairings/{pairing_id}/end", end, from_page=path).status_code == 403
    # Another school's file and pairing answer exactly as none at all.
    client.cookies.clear()
    sign_in(client, world["ct_b1"])
    answers = []
    for case_id, pairing in ((case_a1, pairing_id), (uuid.uuid4(), uuid.uuid4())):
        created = post_form(
            client, f"/cases/{case_id}/pairings", pairing_form(world, "ct_b1"), from_page="/my"
        )
        ended = post_form(client, f"/pairings/{pairing}/end", end, from_page="/my")
        assert "测试学生001" not in created.text + ended.text
        # The address typed shows again (the language switch returns to it): set aside.
        created_text = created.text.replace(str(case_id), "ID")
        ended_text = ended.text.replace(str(pairing), "ID")
        answers.append((created.status_code, created_text, ended.status_code, ended_text))
    assert answers[0] == answers[1] and answers[0][0] == 404 and answers[0][2] == 404
    # A form without the session's token changes nothing.
    client.cookies.clear()
    sign_in(client, world["ct_a1"])
    for form_path, data in (
        (f"{path}/pairings", pairing_form(world, "counselor_a")),
        (f"/pairings/{pairing_id}/end", end),
    ):
        response = client.post(form_path, data=data, follow_redirects=False)
        assert response.status_code == 403 and "表单已失效" in response.text
    assert db.execute("SELECT count(*) FROM pairings WHERE ended_at IS NULL") == [(1,)]
    assert count(db, "pairings") == 1


# -- emergency access ----------------------------------------------------------------------


def grants(db: Any) -> int:
    return count(db, "emergency_grants")


def test_a_leader_asks_for_emergency_access_and_opens_the_file(client, world, db, case_a1):
    student = world.students["a1_first"]
    sign_in(client, world["leader_a"])
    # The leader sees the student's details, not the file: the page offers the way.
    html = client.get(f"/students/{student}").text
    assert f'href="/students/{student}/emergency-access"' in html
    assert f"/cases/{case_a1}" not in html
    assert client.get(f"/cases/{case_a1}").status_code == 403
    page = f"/students/{student}/emergency-access"
    html = client.get(page).text
    assert 'name="reason"' in html and "60 分钟" in html
    assert "测试学生001" not in html  # the form shows nothing of the student

    short = post_form(client, page, {"reason": "情况紧急"}, from_page=page)
    assert short.status_code == 422 and "请说明原因，至少 15 个字" in short.text
    assert "情况紧急" in short.text  # what the reader typed is kept in the form
    assert grants(db) == 0

    response = post_form(client, page, {"reason": GOOD_REASON}, from_page=page)
    assert response.status_code == 303 and response.headers["location"] == page
    assert grants(db) == 1
    html = client.get(page).text
    assert "紧急访问已开通" in html and 'id="live-until"' in html
    assert f'href="/cases/{case_a1}"' in html
    case = client.get(f"/cases/{case_a1}")
    assert case.status_code == 200 and "家访后建立档案" in case.text
    assert "您正通过紧急访问查看该生" in client.get(f"/students/{student}").text
    flagged = db.execute(
        "SELECT count(*) FROM audit_events WHERE action = 'case:read' AND emergency = :t",
        {"t": True},
    )
    assert flagged == [(1,)]
    assert db.execute(
        "SELECT count(*) FROM audit_events WHERE action = 'emergency_access:grant'"
    ) == [(1,)]


def test_emergency_access_ends_after_sixty_minutes(client, world, db):
    student = world.students["a2_first"]

    async def open_file(ctx: Any) -> uuid.UUID:
        from casemgr.care import services as care

        return (await care.open_case(ctx, student, "班主任反映近期情绪低落")).id

    case_id = as_user(db, world["counselor_a"], open_file)
    sign_in(client, world["ct_a1"])
    # Another class's student: not found, with the way to ask.
    response = client.get(f"/students/{student}")
    assert response.status_code == 404 and "测试学生003" not in response.text
    link = re.search(r'<a href="([^"]+)" id="next-step">', response.text).group(1)
    assert link == f"/students/{student}/emergency-access"
    response = post_form(client, link, {"reason": GOOD_REASON}, from_page=link)
    assert response.status_code == 303
    assert client.get(f"/cases/{case_id}").status_code == 200
    assert "测试学生003" in client.get(f"/students/{student}").text

    clock.freeze(clock.now() + timedelta(minutes=61))
    client.cookies.clear()
    sign_in(client, world["ct_a1"])
    assert client.get(f"/cases/{case_id}").status_code == 404
    html = client.get(link).text
    assert 'name="reason"' in html and "紧急访问已开通" not in html


def test_emergency_access_refusals(client, world, db, case_a1):
    own = world.students["a1_first"]
    # Roles that may never ask: 403, for the page and the form.
    sign_in(client, world["auditor"])
    page = f"/students/{own}/emergency-access"
    assert client.get(page).status_code == 403
    assert post_form(client, page, {"reason": GOOD_REASON}, from_page="/account").status_code == 403
    # Another school's student answers exactly as no student.
    client.cookies.clear()
    sign_in(client, world["ct_b1"])
    answers = []
    for student in (own, uuid.uuid4()):
        path = f"/students/{student}/emergency-access"
        shown = client.get(path)
        asked = post_form(client, path, {"reason": GOOD_REASON}, from_page="/my")
        answers.append(
            (
                shown.status_code,
                shown.text.replace(str(student), "ID"),
                asked.status_code,
                asked.text.replace(str(student), "ID"),
            )
        )
    assert answers[0] == answers[1] and answers[0][0] == 404 and answers[0][2] == 404
    # Whoever reaches the file already is told so; nothing is granted.
    client.cookies.clear()
    sign_in(client, world["counselor_a"])
    assert "无需紧急访问" in client.get(page).text
    response = post_form(client, page, {"reason": GOOD_REASON}, from_page=page)
    assert response.status_code == 409 and "您已可查看该生的档案，无需紧急访问。" in response.text
    # Without the session's token: refused, nothing granted.
    client.cookies.clear()
    sign_in(client, world["ct_b1"])
    html = client.get("/my").text
    assert csrf_of(html)
    response = client.post(
        f"/students/{world.students['b1_first']}/emergency-access",
        data={"reason": GOOD_REASON},
        follow_redirects=False,
    )
    assert response.status_code == 403 and "表单已失效" in response.text
    assert grants(db) == 0


def test_page_titles_are_plain_text(client, world, case_a1):
    """A black-box finding: the student page's <title> held a form with the CSRF token
    (browser history and window titles then showed both)."""
    for who in ("ct_a1", "counselor_a"):
        client.cookies.clear()
        sign_in(client, world[who])
        for path in (f"/students/{world.students['a1_first']}", f"/cases/{case_a1}", "/my"):
            response = client.get(path)
            if response.status_code != 200:
                continue
            [title] = re.findall(r"<title>(.*?)</title>", response.text, re.S)
            assert "<" not in title and "csrf" not in title, (who, path, title)
