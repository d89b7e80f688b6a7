"""Acceptance 5 (SPEC P1, P5): no answer, score, band, flag, status, review, guidance or
note reaches the raw database; and ciphertext lengths do not tell a band, status or flag.

Markers go through the real routes (import, review, guidance, counseling note, consent);
then the raw SQLite files (database and write-ahead log) or a ``pg_dump`` are scanned, as
``tests/test_raw_storage_scan.py`` does for students. Controls prove the scan sees rows.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from typing import Any

from casemgr import clock
from tests.screening.helpers import add_students, create_round, table, upload
from tests.test_raw_storage_scan import pg_dump_bytes, sqlite_raw_bytes

NOTE = "ZQXMARKERCOUNSELINGNOTE 咨询记录标记甲乙"
REVIEW_NOTES = "ZQXMARKERREVIEWNOTES 复核记录标记丙丁"
GUIDANCE = "ZQXMARKERGUIDANCE 指导意见标记戊己"
GUARDIAN = "ZQXMARKERGUARDIAN 监护人标记庚辛"
# Answer rows whose JSON spelling is unlikely anywhere else.
ANSWERS = {
    "ST1": [3, 3, 3, 3, 2, 2, 2, 2, 1],  # 21 severe, critical item
    "ST2": [0, 1, 0, 1, 0, 1, 0, 1, 0],  # 4 minimal, below threshold
    "ST3": [2, 2, 2, 2, 2, 0, 0, 1, 0],  # 11 moderate
    "ST4": [3, 2, 3, 2, 3, 2, 1, 0, 0],  # 16 moderately severe
    "ST5": [1, 1, 1, 1, 1, 1, 1, 0, 0],  # 7 mild
}
WORDS = [
    "minimal",
    "moderately_severe",
    "severe",
    "moderate",
    "critical_item",
    "pending_review",
    "below_threshold",
    "reviewed",
    "no_concern",
    "support",
    "granted",
    "declined",
]


def build(client: Any, db: Any, world: Any) -> dict[str, Any]:
    numbers = add_students(db, world.class_a1, len(ANSWERS), prefix="ST")
    renamed = dict(zip(ANSWERS, numbers.values(), strict=True))
    round_id = create_round(client, world)
    counselor = world["counselor_a"].headers
    for n, student_id in enumerate(renamed.values()):
        response = client.post(
            f"/api/v1/screening/rounds/{round_id}/consents",
            json={
                "student_id": str(student_id),
                "decision": "granted",
                "guardian_name": GUARDIAN,
                "recorded_on": clock.today().isoformat(),
            },
            headers=counselor,
        )
        assert response.status_code == 201, response.text
        if n == 4:  # one declined after granting: the latest governs
            client.post(
                f"/api/v1/screening/rounds/{round_id}/consents",
                json={
                    "student_id": str(student_id),
                    "decision": "declined",
                    "guardian_name": GUARDIAN,
                    "recorded_on": clock.today().isoformat(),
                },
                headers=counselor,
            )
    rows = [(f"ST{int(k[2:]):05d}", v) for k, v in ANSWERS.items() if k != "ST5"]
    response = upload(client, world, round_id, table(rows))
    assert response.status_code == 200, response.text
    stored = dict(
        db.execute(
            "SELECT student_id, id FROM screening_results WHERE round_id = :r",
            {"r": db.id(uuid.UUID(round_id))},
        )
    )
    first = stored[db.id(renamed["ST1"])] if db.backend == "sqlite" else stored[renamed["ST1"]]
    review = client.post(
        f"/api/v1/screening/results/{first}/review",
        json={"outcome": "support", "notes": REVIEW_NOTES, "guidance_for_teachers": GUIDANCE},
        headers=counselor,
    )
    assert review.status_code == 200, review.text
    note = client.post(
        f"/api/v1/students/{renamed['ST1']}/counseling-notes",
        json={"notes": NOTE, "result_id": str(first)},
        headers=counselor,
    )
    assert note.status_code == 201, note.text
    # Reads pass the values through more code paths (audit details among them).
    assert client.get("/api/v1/screening/review-queue", headers=counselor).status_code == 200
    got = client.get(f"/api/v1/screening/results/{first}", headers=counselor).json()
    assert got["review"]["notes"] == REVIEW_NOTES
    notes = client.get(f"/api/v1/students/{renamed['ST1']}/counseling-notes", headers=counselor)
    assert notes.json()["items"][0]["notes"] == NOTE
    return {"round_id": round_id, "case_id": review.json()["case_id"]}


def test_no_screening_value_appears_in_the_raw_database(client, db, world, settings):
    built = build(client, db, world)
    raw = (
        sqlite_raw_bytes(settings.database_url)
        if db.backend == "sqlite"
        else pg_dump_bytes(settings.database_url)
    )
    hexed = raw.lower()
    # Controls: the scan sees the round's clear columns and the results' ciphertexts.
    assert "春季心理普查".encode() in raw
    sealed = db.execute("SELECT band FROM screening_results")
    assert sealed and all(bytes(b) in raw or bytes(b).hex().encode() in hexed for (b,) in sealed)
    markers = [NOTE, REVIEW_NOTES, GUIDANCE, GUARDIAN]
    markers += [str(a).replace(" ", "") for a in ANSWERS.values()]  # JSON lists: [3,3,...]
    markers += [", ".join(map(str, a)) for a in ANSWERS.values()]
    markers += [f'"{w}"' for w in WORDS]
    leaked = [m for m in markers if m.encode() in raw or m.encode().hex().encode() in hexed]
    # Bare words too, as a sealed status or band is stored ("reviewed", then padding);
    # not as part of an identifier of the schema ("reviewed_at", "support_logs").
    leaked += [
        w
        for w in WORDS
        if re.search(rb"(?<![a-z_])" + w.encode() + rb"(?![a-z_])", raw)
        or w.encode().hex().encode() in hexed
    ]
    assert leaked == [], f"plaintext found in the raw {db.backend} storage: {leaked}"
    assert built["case_id"]


def test_ciphertext_lengths_do_not_tell_band_status_flags_or_review(client, db, world):
    """P1: every band, status and flag list of the import seals to one length per column,
    and a reviewed result's review to the same length as a pending one's absent review."""
    build(client, db, world)
    lengths: dict[str, set[int]] = defaultdict(set)
    for row in db.execute(
        "SELECT band, status, flags, total, review, answers, scales, administered_on"
        " FROM screening_results"
    ):
        for name, value in zip(
            ("band", "status", "flags", "total", "review", "answers", "scales", "on"),
            row,
            strict=True,
        ):
            lengths[name].add(len(bytes(value)))
    assert {name: len(found) for name, found in lengths.items()} == dict.fromkeys(lengths, 1)
    consents = db.execute("SELECT decision FROM screening_consents")
    assert len({len(bytes(d)) for (d,) in consents}) == 1


def test_every_value_of_the_closed_sets_seals_to_one_length(db):
    import os

    from casemgr.crypto.envelope import FieldCipher
    from casemgr.screening.bulk import seal_values
    from casemgr.screening.instruments import load_catalogue
    from casemgr.screening.models import RESULT_STATUSES, Consent, ScreeningResult

    cipher = FieldCipher(uuid.uuid4(), os.urandom(32))
    catalogue = load_catalogue()
    bands = {b.band for i in catalogue.instruments.values() for b in i.total.bands}
    flags = [[], *([c.flag] for i in catalogue.instruments.values() for c in i.critical)]
    row = uuid.uuid4()
    for column, values in (
        ("band", sorted(bands)),
        ("status", list(RESULT_STATUSES)),
        ("flags", flags),
        ("total", [None, 0, 27, 40]),
    ):
        sizes = {
            len(seal_values(cipher, ScreeningResult, row, {column: v})[column]) for v in values
        }
        assert len(sizes) == 1, column
    decisions = {
        len(seal_values(cipher, Consent, row, {"decision": d})["decision"])
        for d in ("granted", "declined", "withdrawn")
    }
    assert len(decisions) == 1
