"""Nothing secret or personal reaches the logs, whatever happens (SPEC P1, P4).

Every log record of a whole scenario is captured at DEBUG, from the root logger and every
named logger (uvicorn's, Litestar's, the service's, the libraries'): logins with
passwords and TOTP codes, a second factor enrolled, students with marker values, care
records and screening answers with markers, an export, a PDF, refused and malformed
input, denials and an unexpected failure whose message holds a marker. Then the records
(messages, arguments, tracebacks, extra attributes) are scanned for every marker, every
password, TOTP secret and code, bearer token and session cookie of the scenario, and the
key files' bytes as stored, in base64 and in hex.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyotp
import pytest

from casemgr import clock
from casemgr.tabular import write_csv
from tests.care.helpers import TERM_START, day
from tests.factories import PASSWORD, build_world, national_id, student_payload
from tests.web.helpers import csrf_of, sign_in

MARKERS = {
    "full_name": "ZQXLOG姓名标记",
    "address": "ZQXLOG-ADDRESS 日志地址标记",
    "guardian": "ZQXLOG家长标记",
    "phone": "13977712345",
    "student_no": "ZQXLOG-NO-77",
    "details": "ZQXLOG-DETAILS 类别详情",
    "log_notes": "ZQXLOG-LOGNOTES 帮扶记录",
    "visit_notes": "ZQXLOG-VISITNOTES 家访记录",
    "guidance": "ZQXLOG-GUIDANCE 指导意见",
    "counseling": "ZQXLOG-COUNSELING 心理辅导记录",
    "consent_guardian": "ZQXLOG同意家长",
    "review": "ZQXLOG-REVIEW 面谈记录",
    "refused": "ZQXLOG-REFUSED 被拒绝的值",
    "failure": "ZQXLOG-FAILURE 内部错误里的值",
    "wrong_password": "ZQXLOG wrong password phrase",
    "bad_token": "ZQXLOGBADTOKEN0123456789abcdef",
}
NEW_PASSWORD = "ZQXLOG quiet harbour lantern mosaic"
ANSWERS = [3, 0, 3, 1, 2, 0, 3, 1, 2]  # a pattern no other row has
BIRTH = "2013-07-19"
NATIONAL_ID = national_id(date(2013, 7, 19), 777)


class Capture(logging.Handler):
    """Keeps every record, formatted with its traceback and its extra attributes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self._standard = set(vars(logging.makeLogRecord({})))

    def emit(self, record: logging.LogRecord) -> None:
        extra = {k: v for k, v in vars(record).items() if k not in self._standard}
        self.texts.append(f"{self.format(record)} {record.args!r} {extra!r}")


@pytest.fixture
def captured() -> Iterator[Capture]:
    capture = Capture()
    loggers = [logging.getLogger()] + [
        logging.getLogger(name)
        for name in (
            *list(logging.root.manager.loggerDict),
            "uvicorn",
            "uvicorn.error",
            "uvicorn.access",
            "litestar",
            "casemgr",
        )
    ]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        logger.addHandler(capture)
    try:
        yield capture
    finally:
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.removeHandler(capture)


def key_material(keys_dir: Path) -> list[str]:
    """Each private key file as stored, in base64 and in hex (the public key is public)."""
    found = []
    for path in sorted(keys_dir.iterdir()):
        if path.suffix == ".pub" or not path.is_file():
            continue
        raw = path.read_bytes()
        found += [base64.b64encode(raw).decode(), raw.hex()]
        text = raw.decode("ascii", "ignore")
        # PEM bodies and base64 or hex key files: each long line on its own.
        found += [line for line in text.splitlines() if len(line) >= 16 and "-----" not in line]
        if len(raw) == 32:
            found.append(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    return found


def scenario(client: Any, world: Any, db: Any, monkeypatch: Any) -> list[str]:
    """The whole scenario; returns every secret it handled besides the markers."""
    secrets: list[str] = [PASSWORD, NEW_PASSWORD]
    ct, counselor, leader = world["ct_a1"], world["counselor_a"], world["leader_a"]
    for account in world.accounts.values():
        secrets.append(account.token)
        if account.totp_secret:
            secrets.append(account.totp_secret)

    # Logins: a password alone, a password and a TOTP code, failures with markers.
    code = counselor.totp_now()
    secrets.append(code)
    for body in (
        {"username": "ct_a1", "password": PASSWORD},
        {"username": "counselor_a", "password": PASSWORD, "totp": code},
        {"username": "ct_a1", "password": MARKERS["wrong_password"]},
        {"username": MARKERS["refused"], "password": MARKERS["wrong_password"]},
    ):
        response = client.post("/api/v1/auth/login", json=body)
        if response.status_code == 200:
            secrets.append(response.json()["token"])
    # The browser: sign in with a TOTP code, the session cookie is a secret too.
    sign_in(client, leader)
    secrets += [v for v in client.cookies.values() if len(v) >= 16]

    # A student with markers in every personal field, and refused ones.
    headers = ct.headers
    student = student_payload(
        world.class_a1,
        777,
        full_name=MARKERS["full_name"],
        address=MARKERS["address"],
        student_no=MARKERS["student_no"],
        birth_date=BIRTH,
        national_id=NATIONAL_ID,
        guardians=[{"name": MARKERS["guardian"], "relation": "母亲", "phone": MARKERS["phone"]}],
    )
    created = client.post("/api/v1/students", json=student, headers=headers)
    assert created.status_code == 201, created.text
    student_id = created.json()["id"]
    for bad in (
        {**student, "full_name": MARKERS["refused"] + "\u202e"},
        {**student, "national_id": NATIONAL_ID[:-1] + "0", "student_no": "X1"},
        {**student, "gender": MARKERS["refused"]},
    ):
        refused = client.post("/api/v1/students", json=bad, headers=headers)
        assert refused.status_code in (409, 422), refused.text
    client.post("/api/v1/students/lookup", json={"national_id": NATIONAL_ID}, headers=headers)

    # Care records with markers.
    category = client.post(
        f"/api/v1/students/{student_id}/care-categories",
        json={"category": "left_behind", "since": day(-30), "details": MARKERS["details"]},
        headers=headers,
    ).json()
    case_id = category["case_id"]
    client.post(
        f"/api/v1/cases/{case_id}/support-logs",
        json={"occurred_on": day(0), "kind": "family_contact", "notes": MARKERS["log_notes"]},
        headers=headers,
    )
    client.post(
        f"/api/v1/students/{student_id}/home-visits",
        json={
            "visited_on": day(0),
            "participant_ids": [],
            "mode": "in_person",
            "notes": MARKERS["visit_notes"],
        },
        headers=headers,
    )
    client.post(
        f"/api/v1/cases/{case_id}/guidance",
        json={"text": MARKERS["guidance"]},
        headers=counselor.headers,
    )
    client.post(
        f"/api/v1/students/{student_id}/counseling-notes",
        json={"notes": MARKERS["counseling"]},
        headers=counselor.headers,
    )

    # Screening: a round, a consent, an import with the answers pattern, a refused one.
    round_id = client.post(
        "/api/v1/screening/rounds",
        json={
            "school_id": str(world.school_a),
            "name": "春季普查",
            "instrument": "phq9",
            "school_year": "2026-2027",
            "class_ids": [str(world.class_a1)],
            "opens_on": day(-5),
            "closes_on": day(20),
        },
        headers=counselor.headers,
    ).json()["id"]
    client.post(
        f"/api/v1/screening/rounds/{round_id}/consents",
        json={
            "student_id": student_id,
            "decision": "granted",
            "guardian_name": MARKERS["consent_guardian"],
            "recorded_on": day(-1),
        },
        headers=counselor.headers,
    )
    header = ["student_no", "administered_on", *(f"q{n}" for n in range(1, 10))]
    upload = {**counselor.headers, "Content-Type": "text/csv"}
    for rows in (
        [header, [MARKERS["student_no"], day(-1), *map(str, ANSWERS)]],
        [header, [MARKERS["refused"], day(-1), *map(str, ANSWERS)]],
    ):
        client.post(
            f"/api/v1/screening/rounds/{round_id}/results", content=write_csv(rows), headers=upload
        )
    queue = client.get("/api/v1/screening/review-queue", headers=counselor.headers).json()
    for item in queue["items"]:
        client.post(
            f"/api/v1/screening/results/{item['result_id']}/review",
            json={"outcome": "support", "notes": MARKERS["review"]},
            headers=counselor.headers,
        )

    # Reads, the export, the PDF (the class teacher's browser).
    for path in (
        f"/api/v1/students/{student_id}",
        f"/api/v1/cases/{case_id}",
        f"/api/v1/cases/{case_id}/timeline",
        f"/api/v1/students/{student_id}/export",
    ):
        assert client.get(path, headers=headers).status_code == 200, path
    client.cookies.clear()
    sign_in(client, ct)
    secrets += [v for v in client.cookies.values() if len(v) >= 16]
    page = client.get(f"/cases/{case_id}")
    pdf = client.post(f"/cases/{case_id}/export.pdf", data={"csrf_token": csrf_of(page.text)})
    assert pdf.headers["content-type"] == "application/pdf"

    # Denials, errors of every kind, an unexpected failure.
    client.get(f"/api/v1/students/{student_id}", headers=world["admin"].headers)
    client.get(f"/api/v1/students/{student_id}", headers=world["ct_b1"].headers)
    client.get(
        f"/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {MARKERS['bad_token']}"}
    )
    client.post(
        "/api/v1/cases",
        content=b'{"student_id": "' + MARKERS["refused"].encode() + b'", "reason": ',
        headers={**headers, "Content-Type": "application/json"},
    )
    client.post(
        "/api/v1/cases", content=b"[" * 100, headers={**headers, "Content-Type": "application/json"}
    )

    from casemgr.students import services

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(f"{MARKERS['failure']} {NATIONAL_ID} {PASSWORD}")

    monkeypatch.setattr(services, "details", broken)
    failed = client.get(f"/api/v1/students/{student_id}", headers=headers)
    assert failed.status_code == 500
    monkeypatch.undo()

    # A second factor enrolled, a password changed.
    started = client.post("/api/v1/me/totp", headers=headers).json()
    secrets.append(started["secret"])
    confirm_code = pyotp.TOTP(started["secret"]).now()
    secrets.append(confirm_code)
    client.post("/api/v1/me/totp/confirm", json={"code": confirm_code}, headers=headers)
    client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    return [s for s in secrets if s]


def test_no_secret_or_personal_value_in_the_logs(client, db, settings, captured, monkeypatch):
    clock.freeze(TERM_START)
    world = build_world(db)
    secrets = scenario(client, world, db, monkeypatch)
    keys = key_material(settings.keys_dir)
    assert len(keys) >= 6
    logged = "\n".join(captured.texts)
    # The capture works: the failure was logged (by its type), requests too.
    assert "unhandled RuntimeError" in logged
    assert len(captured.texts) > 100
    answers = [", ".join(map(str, ANSWERS)), ",".join(map(str, ANSWERS)), str(ANSWERS)]
    wanted = {
        **{f"marker {k}": v for k, v in MARKERS.items()},
        "national ID": NATIONAL_ID,
        **{f"answers {n}": a for n, a in enumerate(answers)},
        **{f"secret {n}": s for n, s in enumerate(secrets)},
        **{f"key {n}": k for n, k in enumerate(keys)},
    }
    found = [name for name, value in wanted.items() if value in logged]
    assert found == [], found
