"""The pages of each user group do their work through the services (without a browser)."""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any

from casemgr.care.schemas import PairingIn
from tests.web.conftest import as_user
from tests.web.helpers import csrf_of, post_form, sign_in


def test_quick_entry_answers_htmx_with_the_refreshed_fragment(client, world, db):
    sign_in(client, world["ct_a1"])
    token = csrf_of(client.get("/my").text)
    response = client.post(
        "/my/home-visits",
        data={
            "csrf_token": token,
            "student_id": str(world.students["a1_second"]),
            "visited_on": "2026-11-30",
            "mode": "video",
            "notes": "视频家访。",
        },
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="my-work">')
    assert "<html" not in response.text  # a fragment, not a page
    assert "家访记录已保存。" in response.text
    assert db.execute("SELECT count(*) FROM home_visits")[0][0] == 1


def test_quick_entry_refusals_name_the_field(client, world, db):
    sign_in(client, world["ct_a1"])
    data = {
        "student_id": str(world.students["a1_second"]),
        "visited_on": "2099-01-01",
        "mode": "in_person",
        "notes": "未来的家访",
    }
    response = post_form(client, "/my/home-visits", data, from_page="/my")
    assert response.status_code == 422
    assert "家访日期" in response.text and "不能晚于今天" in response.text
    # a student of another class: "not found", and nothing stored
    data["visited_on"] = "2026-11-30"
    data["student_id"] = str(world.students["b1_first"])
    assert post_form(client, "/my/home-visits", data, from_page="/my").status_code == 404
    assert db.execute("SELECT count(*) FROM home_visits")[0][0] == 0


def test_a_mentor_sees_only_the_paired_student(client, world, db, case_a1):
    async def pair(ctx: Any) -> None:
        from casemgr.care import services as care

        await care.create_pairing(
            ctx,
            case_a1,
            PairingIn(
                mode="one_to_one",
                mentor_ids=[world["teacher_a"].id],
                goals="每周一次学业辅导",
                starts_on=date(2026, 11, 1),
            ),
        )

    as_user(db, world["ct_a1"], pair)
    sign_in(client, world["teacher_a"])
    html = client.get("/my").text
    assert "测试学生001" in html
    assert "测试学生002" not in html  # same class, not paired
    assert "/students/" not in html  # mentors do not read personal details
    case = client.get(f"/cases/{case_a1}")
    assert case.status_code == 200 and "每周一次学业辅导" in case.text
    assert "下载 PDF" not in case.text  # mentors do not export the whole record


def test_roster_import_shows_each_bad_row_and_stores_nothing(client, world, db):
    sign_in(client, world["leader_a"])
    page = client.get(f"/school/import?school_id={world.school_a}")
    header = "class_name,student_no,full_name,gender,birth_date\n"
    bad = (
        header + "七年级1班,N-100,新同学甲,女,2013-04-01\n不存在的班,N-101,新同学乙,男,2013-13-01\n"
    )
    response = client.post(
        "/school/import",
        data={"csrf_token": csrf_of(page.text), "school_id": str(world.school_a)},
        files={"file": ("roster.csv", bad.encode())},
    )
    assert response.status_code == 422
    rows = re.findall(r"<tr><td>(\d+)</td>", response.text)
    assert rows == ["2"]
    assert "新同学乙" not in response.text  # row errors name the rule, never the value
    count = db.execute("SELECT count(*) FROM students")[0][0]
    good = header + "七年级1班,N-100,新同学甲,女,2013-04-01\n"
    response = client.post(
        "/school/import",
        data={"csrf_token": csrf_of(page.text), "school_id": str(world.school_a)},
        files={"file": ("roster.csv", good.encode())},
    )
    assert response.status_code == 200 and "新增学生: 1" in response.text
    assert db.execute("SELECT count(*) FROM students")[0][0] == count + 1


def test_rollover_shows_the_plan_before_carrying_it_out(client, world, db):
    sign_in(client, world["leader_a"])
    data = {"school_id": str(world.school_a), "to_school_year": "2027-2028"}
    response = post_form(
        client, "/school/rollover", data, from_page=f"/school/rollover?school_id={world.school_a}"
    )
    assert response.status_code == 200
    assert "执行后的结果" in response.text and "七年级1班" in response.text
    assert db.execute("SELECT count(*) FROM classes WHERE school_year = '2027-2028'") == [(0,)]
    response = post_form(
        client,
        "/school/rollover",
        {**data, "confirm": "yes"},
        from_page=f"/school/rollover?school_id={world.school_a}",
    )
    assert response.status_code == 200 and "已完成" in response.text
    # The school's only grade is its top one: every student of school A leaves.
    left = db.execute("SELECT count(*) FROM students WHERE enrolment = 'left'")
    assert left == [(3,)]


def test_leader_creates_a_class_and_sees_the_suppressed_summary(client, world, db):
    sign_in(client, world["leader_a"])
    html = client.get("/school").text
    assert "<svg" in html and "不显示" in html  # small counts are hidden
    data = {
        "school_id": str(world.school_a),
        "name": "七年级3班",
        "grade": "7",
        "school_year": "2026-2027",
    }
    response = post_form(client, "/school/classes", data, from_page="/school")
    assert response.status_code == 303
    assert "七年级3班" in client.get("/school").text
    # another school's: refused as the API refuses it
    data["school_id"] = str(world.school_b)
    assert post_form(client, "/school/classes", data, from_page="/school").status_code == 404


def test_auditor_reviews_an_emergency_access(client, world, db):
    async def open_door(ctx: Any) -> uuid.UUID:
        from casemgr.care import emergency

        grant = await emergency.request_access(
            ctx, world.students["a2_first"], "学生在走廊突发情况，需要立即查看联系人信息。"
        )
        return grant.id

    grant_id = as_user(db, world["ct_a1"], open_door)
    sign_in(client, world["auditor"])
    html = client.get("/audit").text
    assert str(grant_id) in html and "学生在走廊突发情况" in html
    response = post_form(
        client, f"/audit/emergency/{grant_id}/review", {"note": "理由充分"}, from_page="/audit"
    )
    assert response.status_code == 303
    review_list = client.get("/audit").text.split('id="em-h"', 1)[1]
    assert str(grant_id) not in review_list  # reviewed: off the list
    assert "emergency_access:review" in client.get("/audit?action=emergency_access:review").text


def test_audit_filters_refuse_bad_values_without_echoing_them(client, world):
    sign_in(client, world["auditor"])
    response = client.get("/audit?student_id=<b>x</b>&since=yesterday")
    assert response.status_code == 200
    assert "<b>x</b>" not in response.text
    assert "不是有效的标识" in response.text and "须为日期" in response.text


def test_bureau_admin_adds_a_school_and_an_account(client, world, db):
    sign_in(client, world["admin"])
    response = post_form(
        client,
        "/admin/schools",
        {"name": "测试学校丙", "code": "T-C", "stage": "junior"},
        from_page="/admin",
    )
    assert response.status_code == 303
    assert "测试学校丙" in client.get("/admin").text
    page = client.get(f"/school/accounts?school_id={world.school_b}")
    response = client.post(
        "/school/accounts",
        data={
            "csrf_token": csrf_of(page.text),
            "school_id": str(world.school_b),
            "username": "leader.b",
            "display_name": "乙校校长",
            "role": "school_leader",
        },
    )
    assert response.status_code == 200 and 'id="one-time-password"' in response.text
    users = db.execute("SELECT count(*) FROM users WHERE username = 'leader.b'")
    assert users == [(1,)]


def test_class_teacher_records_a_category_then_closes_the_file(client, world, db):
    sign_in(client, world["ct_a1"])
    student = world.students["a1_second"]
    page = f"/students/{student}"
    assert "登记关爱类别" in client.get(page).text
    response = post_form(
        client,
        f"/students/{student}/cases",
        {"category": "left_behind", "since": "2026-09-01", "reason": "父母在外务工"},
        from_page=page,
    )
    assert response.status_code == 303
    case_path = response.headers["location"]
    html = client.get(case_path).text
    assert "留守儿童" in html and "父母在外务工" in html
    assert re.search(r"<title>一人一册档案 [A-Z0-9]{4}-[A-Z0-9]{4} ·", html)
    response = post_form(
        client, f"{case_path}/close", {"reason": "情况好转，结案。"}, from_page=case_path
    )
    assert response.status_code == 303
    assert "已结案" in client.get(case_path).text
    # a mentor never gets these forms, and the service refuses them as the API does
    client.cookies.clear()
    sign_in(client, world["teacher_a"])
    response = post_form(
        client, f"/students/{student}/cases", {"reason": "x"}, from_page="/account"
    )
    assert response.status_code == 403


def test_a_screening_round_from_creation_to_the_review_queue(client, world, db):
    from casemgr import clock

    today = clock.today()
    sign_in(client, world["counselor_a"])
    response = post_form(
        client,
        "/screening/rounds",
        {
            "school_id": str(world.school_a),
            "name": "秋季普查",
            "instrument": "phq9",
            "school_year": "2026-2027",
            "class_ids": str(world.class_a1),
            "opens_on": today.replace(day=1).isoformat(),
            "closes_on": (today.replace(day=1).replace(year=today.year + 1)).isoformat(),
        },
        from_page="/screening/rounds",
    )
    assert response.status_code == 303, response.text
    round_id = db.execute("SELECT id FROM screening_rounds")[0][0]
    round_id = uuid.UUID(str(round_id)) if not isinstance(round_id, uuid.UUID) else round_id
    counselor_session = client.cookies["casemgr_session"]

    client.cookies.clear()
    sign_in(client, world["ct_a1"])
    html = client.get("/screening/rounds").text
    assert "秋季普查" in html and "phq9" not in html  # teachers do not see the instrument
    response = post_form(
        client,
        f"/screening/rounds/{round_id}/consents",
        {
            "student_id": str(world.students["a1_second"]),
            "decision": "granted",
            "guardian_name": "测试家长002",
            "recorded_on": today.isoformat(),
        },
        from_page="/screening/rounds",
    )
    assert response.status_code == 303

    # back to the counselor's browser (a TOTP code is good once: no second sign-in)
    client.cookies.clear()
    client.cookies.set("casemgr_session", counselor_session, domain="testserver.local")
    page = client.get("/screening/rounds")
    answers = ",".join(["3"] * 9)
    body = f"student_no,administered_on,{','.join(f'q{n}' for n in range(1, 10))}\n"
    body += f"NO00002,{today.isoformat()},{answers}\n"
    response = client.post(
        f"/screening/rounds/{round_id}/results",
        data={"csrf_token": csrf_of(page.text)},
        files={"file": ("results.csv", body.encode())},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"].endswith("imported=1")
    assert "<td>27</td>" in client.get("/screening").text


def test_counseling_notes_are_for_counselors_only(client, world, case_a1):
    sign_in(client, world["counselor_a"])
    path = f"/cases/{case_a1}"
    response = post_form(
        client, f"{path}/counseling-notes", {"notes": "第一次面谈，情绪平稳。"}, from_page=path
    )
    assert response.status_code == 303
    assert "第一次面谈，情绪平稳。" in client.get(path).text
    client.cookies.clear()
    sign_in(client, world["ct_a1"])
    html = client.get(path).text
    assert "第一次面谈" not in html and "心理辅导记录" not in html
    response = post_form(client, f"{path}/counseling-notes", {"notes": "x"}, from_page=path)
    assert response.status_code == 403
