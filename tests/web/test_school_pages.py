"""School leaders' pages for transfers between schools and the yearly home-visit
requirements, through the pages.

Each page: the work done through the same service as the API, a role that may not, a form
without its CSRF token, and another school's record answering exactly as no record.
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any

from casemgr.authz import Role
from tests.care.helpers import add_staff
from tests.factories import national_id, student_payload
from tests.web.conftest import as_user
from tests.web.helpers import csrf_of, post_form, sign_in

B1_FIRST = 4  # tests.factories.build_world numbers b1_first's details with 4
UNKNOWN_ID = national_id(date(2012, 3, 4), 777)  # well formed, registered nowhere


def count(db: Any, table: str, where: str = "") -> int:
    sql = f"SELECT count(*) FROM {table} {where}"  # nosec B608
    return int(db.execute(sql)[0][0])


def session_of(client: Any) -> str:
    return str(client.cookies["casemgr_session"])


def resume(client: Any, session: str) -> None:
    """Back to a browser signed in before (a TOTP code is good once: no second sign-in)."""
    client.cookies.clear()
    client.cookies.set("casemgr_session", session, domain="testserver.local")


def another_browser(client: Any) -> None:
    client.cookies.clear()


# -- transfers -----------------------------------------------------------------------------


def test_a_transfer_asked_for_by_one_leader_and_approved_by_the_other(client, world, db):
    add_staff(db, world, "leader_b", Role.SCHOOL_LEADER, world.school_b)
    sign_in(client, world["leader_a"])
    leader_a = session_of(client)
    page = "/school/transfers"
    html = client.get(page).text
    assert 'name="national_id"' in html and f'value="{world.class_a1}"' in html
    assert str(world.class_b1) not in html  # only the leader's own classes to join
    known = student_payload(world.class_b1, B1_FIRST)["national_id"]
    answers = []
    for wanted in (known, UNKNOWN_ID):
        data = {"national_id": wanted, "to_class_id": str(world.class_a1)}
        response = post_form(client, page, data, from_page=page)
        answers.append((response.status_code, response.headers.get("location")))
    # The same answer whether or not the child is registered anywhere.
    assert answers == [(303, f"{page}?done=requested")] * 2
    html = client.get(f"{page}?done=requested").text
    assert "申请已提交" in html
    outgoing = html.split('id="outgoing"', 1)[1].split("</table>", 1)[0]
    assert outgoing.count("等待决定") == 2 and "测试学生004" not in html
    assert count(db, "transfer_requests") == 2

    another_browser(client)
    sign_in(client, world["leader_b"])
    html = client.get(page).text
    incoming = html.split('id="incoming"', 1)[1].split("</table>", 1)[0]
    assert "测试学生004" in incoming and "测试学校甲" in incoming
    transfer_id = re.search(r'/school/transfers/([0-9a-f-]{36})/approve"', incoming).group(1)
    assert incoming.count("/approve") == 1  # the unknown ID asked for no one here
    response = post_form(client, f"/school/transfers/{transfer_id}/approve", {}, from_page=page)
    assert response.status_code == 303 and response.headers["location"] == f"{page}?done=approved"
    assert "已同意转学" in client.get(response.headers["location"]).text
    moved = db.execute(
        "SELECT school_id FROM students WHERE id = :s", {"s": db.id(world.students["b1_first"])}
    )
    assert str(moved[0][0]).replace("-", "") == str(world.school_a).replace("-", "")
    # Deciding twice: a clear error, nothing changes.
    response = post_form(client, f"/school/transfers/{transfer_id}/decline", {}, from_page=page)
    assert response.status_code == 409 and "该申请已被同意。" in response.text

    resume(client, leader_a)
    outgoing = client.get(page).text.split('id="outgoing"', 1)[1].split("</table>", 1)[0]
    assert "已同意" in outgoing and "等待决定" in outgoing


def test_a_declined_request_still_shows_as_waiting_to_the_asking_school(client, world, db):
    add_staff(db, world, "leader_b", Role.SCHOOL_LEADER, world.school_b)
    sign_in(client, world["leader_a"])
    leader_a = session_of(client)
    known = student_payload(world.class_b1, B1_FIRST)["national_id"]
    data = {"national_id": known, "to_class_id": str(world.class_a1)}
    assert post_form(client, "/school/transfers", data, from_page="/school").status_code == 303
    another_browser(client)
    sign_in(client, world["leader_b"])
    html = client.get("/school/transfers").text
    transfer_id = re.search(r"/school/transfers/([0-9a-f-]{36})/decline", html).group(1)
    response = post_form(
        client, f"/school/transfers/{transfer_id}/decline", {}, from_page="/school/transfers"
    )
    assert response.status_code == 303
    assert "已不同意该申请。" in client.get(response.headers["location"]).text
    assert count(db, "transfer_requests", "WHERE status = 'declined'") == 1
    resume(client, leader_a)
    outgoing = client.get("/school/transfers").text.split('id="outgoing"', 1)[1]
    assert "等待决定" in outgoing.split("</table>", 1)[0]  # a decline is no oracle


def test_transfer_pages_refuse_bad_input_other_schools_roles_and_forged_posts(client, world, db):
    add_staff(db, world, "leader_b", Role.SCHOOL_LEADER, world.school_b)
    sign_in(client, world["leader_a"])
    page = "/school/transfers"
    # A mistyped ID: the rule broken is named, the digits are not shown again.
    typo = UNKNOWN_ID[:-1] + ("0" if UNKNOWN_ID[-1] != "0" else "1")
    response = post_form(
        client, page, {"national_id": typo, "to_class_id": str(world.class_a1)}, from_page=page
    )
    assert response.status_code == 422 and "身份证号" in response.text
    assert "校验码不符" in response.text and typo not in response.text
    response = post_form(client, page, {"national_id": "", "to_class_id": ""}, from_page=page)
    assert response.status_code == 422 and "不能为空" in response.text
    assert count(db, "transfer_requests") == 0
    # A class of another school answers as no class at all.
    answers = []
    for class_id in (world.class_b1, uuid.uuid4()):
        data = {"national_id": UNKNOWN_ID, "to_class_id": str(class_id)}
        response = post_form(client, page, data, from_page=page)
        answers.append((response.status_code, response.text))
    assert answers[0] == answers[1] and answers[0][0] == 404
    assert count(db, "transfer_requests") == 0
    # A request naming a student of school B is school B's to decide: as none to school A.
    known = student_payload(world.class_b1, B1_FIRST)["national_id"]
    post_form(
        client, page, {"national_id": known, "to_class_id": str(world.class_a1)}, from_page=page
    )
    transfer_id = uuid.UUID(str(db.execute("SELECT id FROM transfer_requests")[0][0]))
    for action in ("approve", "decline"):
        answers = []
        for target in (transfer_id, uuid.uuid4()):
            response = post_form(client, f"{page}/{target}/{action}", {}, from_page=page)
            answers.append((response.status_code, response.text.replace(str(target), "ID")))
        assert answers[0] == answers[1] and answers[0][0] == 404, action
    # Without the session's token: refused.
    response = client.post(
        page,
        data={"national_id": UNKNOWN_ID, "to_class_id": str(world.class_a1)},
        follow_redirects=False,
    )
    assert response.status_code == 403 and "表单已失效" in response.text
    assert count(db, "transfer_requests", "WHERE status = 'pending'") == 1
    # Roles that never handle transfers: 403 for the list, the request and the decisions.
    for role in ("ct_a1", "counselor_a"):
        client.cookies.clear()
        sign_in(client, world[role])
        assert client.get(page).status_code == 403
        data = {"national_id": UNKNOWN_ID, "to_class_id": str(world.class_a1)}
        assert post_form(client, page, data, from_page="/account").status_code == 403
        response = post_form(client, f"{page}/{transfer_id}/approve", {}, from_page="/account")
        assert response.status_code == 403
    assert count(db, "transfer_requests") == 1


# -- home-visit requirements ---------------------------------------------------------------


def test_leader_sets_the_yearly_visit_requirements_and_follows_progress(client, world, db):
    async def visit(ctx: Any) -> None:
        from casemgr import clock
        from casemgr.care import visits
        from casemgr.care.schemas import HomeVisitIn

        data = HomeVisitIn(
            visited_on=clock.today(),
            participant_ids=[world["ct_a1"].id],
            mode="in_person",
            notes="家访，了解学习情况。",
        )
        await visits.add_home_visit(ctx, world.students["a1_first"], data)

    as_user(db, world["ct_a1"], visit)
    sign_in(client, world["leader_a"])
    overview = client.get("/school").text
    assert "班主任家访情况" in overview and 'href="/school/visits?school_id=' in overview
    page = f"/school/visits?school_id={world.school_a}"
    html = client.get(page).text
    requirement = html.split('id="requirement"', 1)[1].split("</dl>", 1)[0]
    assert "<dd>2026-2027</dd>" in requirement and requirement.count("<dd>1</dd>") == 2
    progress = html.split('id="visit-progress"', 1)[1].split("</table>", 1)[0]
    # 七年级1班: two students, one visited once, as required (1 per student).
    assert "<td>七年级1班</td><td>1</td><td>2</td><td>1</td><td>1</td>" in progress
    assert "测试学生" not in html  # counts only

    data = {
        "school_id": str(world.school_a),
        "school_year": "2026-2027",
        "class_teacher_visits": "3",
        "mentor_visits": "2",
    }
    response = post_form(client, "/school/visits", data, from_page=page)
    assert response.status_code == 303
    html = client.get(response.headers["location"]).text
    assert "要求已保存。" in html
    requirement = html.split('id="requirement"', 1)[1].split("</dl>", 1)[0]
    assert "<dd>3</dd>" in requirement and "<dd>2</dd>" in requirement
    progress = html.split('id="visit-progress"', 1)[1].split("</table>", 1)[0]
    assert "<td>七年级1班</td><td>3</td><td>2</td><td>0</td><td>1</td>" in progress
    assert db.execute("SELECT class_teacher_visits, mentor_visits FROM visit_requirements") == [
        (3, 2)
    ]


def test_visit_requirement_refusals(client, world, db):
    sign_in(client, world["leader_a"])
    page = f"/school/visits?school_id={world.school_a}"
    good = {
        "school_id": str(world.school_a),
        "school_year": "2026-2027",
        "class_teacher_visits": "2",
        "mentor_visits": "1",
    }
    for field, value, message in (
        ("class_teacher_visits", "13", "须为 0 到 12 之间的整数"),
        ("mentor_visits", "-1", "须为 0 到 12 之间的整数"),
        ("mentor_visits", "两次", "须为 0 到 12 之间的整数"),
        ("school_year", "2020-2021", "不能早于本学年"),
        ("school_year", "2026", "格式如 2026-2027"),
    ):
        response = post_form(client, "/school/visits", {**good, field: value}, from_page=page)
        assert response.status_code == 422, (field, value)
        assert message in response.text, (field, value)
    assert count(db, "visit_requirements") == 0
    # Another school's settings answer as those of no school.
    answers = []
    for school_id in (world.school_b, uuid.uuid4()):
        response = post_form(
            client, "/school/visits", {**good, "school_id": str(school_id)}, from_page=page
        )
        shown = client.get(f"/school/visits?school_id={school_id}")
        answers.append((response.status_code, response.text, shown.status_code, shown.text))
    assert answers[0] == answers[1] and answers[0][0] == 404 and answers[0][2] == 404
    # Without the session's token.
    response = client.post("/school/visits", data=good, follow_redirects=False)
    assert response.status_code == 403 and "表单已失效" in response.text
    assert count(db, "visit_requirements") == 0
    # Roles that may not set them: 403.
    for role in ("ct_a1", "counselor_a"):
        client.cookies.clear()
        sign_in(client, world[role])
        assert client.get(page).status_code == 403
        response = post_form(client, "/school/visits", good, from_page="/account")
        assert response.status_code == 403
    assert count(db, "visit_requirements") == 0


def test_the_pages_fit_a_phone_and_label_every_field(client, world, db, case_a1):
    """Every field of the new forms has a label, nothing is styled or scripted inline, and
    no page is kept in a cache."""
    sign_in(client, world["leader_a"])
    pages = [
        "/school/transfers",
        f"/school/visits?school_id={world.school_a}",
        f"/students/{world.students['a1_first']}/emergency-access",
    ]
    for path in pages:
        response = client.get(path)
        assert response.headers["cache-control"] == "no-store", path
        assert_labelled(response.text, path)
    client.cookies.clear()
    assert sign_in(client, world["ct_a1"]).status_code == 303
    html = client.get(f"/cases/{case_a1}").text
    assert 'name="mentor_ids"' in html and csrf_of(html)
    assert_labelled(html, "case")


def assert_labelled(html: str, where: str) -> None:
    assert "<script>" not in html and " style=" not in html and " onclick" not in html, where
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    for tag, attributes in re.findall(r"<(input|select|textarea)\b([^>]*)>", html):
        if 'type="hidden"' in attributes or 'type="submit"' in attributes:
            continue
        found = re.search(r'\bid="([^"]+)"', attributes)
        assert found and found.group(1) in labels, (where, tag, attributes)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
