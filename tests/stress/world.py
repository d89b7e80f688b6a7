"""The stress tests' county, built once per backend and copied for each test.

Two schools (A and B) of five classes with twelve students each; one class teacher per
class, two counselors and a leader per school, each with a bearer token of their own, so
that every load client acts as a different person and the audit trail can be counted per
actor. The first six students of each class have an open case file; every student has a
PHQ-9 result pending review from the school's round. A third school (C) holds
``BULK_STUDENTS`` students with granted consent in one round and nothing else: the
imports that a test kills halfway go there.

Accounts, schools and classes are made by the services; students and consents are
inserted in bulk, sealed exactly as the services seal them (as ``benchmarks/`` seeds);
results and case files go in through the API of a running service.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit, clock
from casemgr.accounts import passwords
from casemgr.accounts.services import create_user, issue_token
from casemgr.authz import Role
from casemgr.crypto import Crypto, KeyRing, create_key_ring
from casemgr.crypto.envelope import FieldCipher, new_data_key, wrap_with
from casemgr.crypto.models import DataKey
from casemgr.migrate import upgrade
from casemgr.schools.services import add_class, add_school
from casemgr.schoolyear import calendar_school_year
from casemgr.screening.bulk import seal_values
from casemgr.screening.models import Consent, RoundClass, ScreeningResult, ScreeningRound
from casemgr.students.models import Student
from casemgr.students.services import new_student_code
from tests.stress.harness import Server, Site, connections, serving

PASSWORD = "correct horse battery staple"
CLASSES_PER_SCHOOL = 5
STUDENTS_PER_CLASS = 12
FILES_PER_CLASS = 6
COUNSELORS_PER_SCHOOL = 2
BULK_CLASSES = 10
BULK_STUDENTS = 3000
PHQ9_ITEMS = 9


@dataclass
class Account:
    id: str
    token: str
    role: str


@dataclass
class ClassWorld:
    id: str
    name: str
    teacher: Account
    students: list[str]
    numbers: list[str]
    # Students with an open case file -> the file.
    cases: dict[str, str] = field(default_factory=dict)


@dataclass
class SchoolWorld:
    id: str
    leader: Account
    counselors: list[Account]
    classes: list[ClassWorld]
    round_id: str
    # Student -> their result in the school's round (pending review).
    results: dict[str, str] = field(default_factory=dict)

    @property
    def cases(self) -> dict[str, str]:
        return {s: c for cls in self.classes for s, c in cls.cases.items()}


@dataclass
class BulkWorld:
    id: str
    leader: Account
    counselor: Account
    class_names: list[str]
    round_id: str
    numbers: list[str]


@dataclass
class World:
    school_year: str
    schools: list[SchoolWorld]
    bulk: BulkWorld


@functools.cache
def _password_hash() -> str:
    return passwords.hash_password_sync(PASSWORD)


async def _cached_hash(password: str) -> str:
    assert password == PASSWORD
    return _password_hash()


def phq9_csv(numbers: list[str], administered_on: str, seed: int) -> bytes:
    rng = random.Random(seed)
    header = "student_no,administered_on," + ",".join(f"q{n}" for n in range(1, PHQ9_ITEMS + 1))
    lines = [header]
    for number in numbers:
        answers = ",".join(str(rng.choice((0, 0, 1, 1, 2, 3))) for _ in range(PHQ9_ITEMS))
        lines.append(f"{number},{administered_on},{answers}")
    return ("\r\n".join(lines) + "\r\n").encode()


def roster_csv(class_names: list[str], numbers: list[str]) -> bytes:
    lines = ["class_name,student_no,full_name,gender,birth_date"]
    for n, number in enumerate(numbers):
        gender = "female" if n % 2 else "male"
        class_name = class_names[n % len(class_names)]
        lines.append(f"{class_name},{number},压力测试{number},{gender},2013-05-0{1 + n % 9}")
    return ("\r\n".join(lines) + "\r\n").encode()


class _Seeder:
    def __init__(self, session: AsyncSession, crypto: Crypto, site: Site) -> None:
        self.session = session
        self.crypto = crypto
        self.settings = site.settings()
        self.year = calendar_school_year()
        self.today = clock.today()

    async def account(
        self,
        username: str,
        role: Role,
        school_id: uuid.UUID,
        class_ids: tuple[uuid.UUID, ...] = (),
    ) -> Account:
        created = await create_user(
            self.session,
            self.crypto,
            username=username,
            password=PASSWORD,
            role=role,
            school_id=school_id,
            class_ids=class_ids,
        )
        token, _, _ = await issue_token(self.session, self.settings, created.id)
        return Account(str(created.id), token, role.value)

    async def round(self, school_id: uuid.UUID, class_ids: list[uuid.UUID]) -> uuid.UUID:
        screening_round = ScreeningRound(
            id=uuid.uuid4(),
            school_id=school_id,
            name="压力测试筛查",
            instrument="phq9",
            school_year=self.year,
            opens_on=self.today - timedelta(days=10),
            closes_on=self.today + timedelta(days=10),
        )
        self.session.add(screening_round)
        await self.session.flush()
        self.session.add_all(
            RoundClass(round_id=screening_round.id, class_id=class_id) for class_id in class_ids
        )
        return screening_round.id

    async def students(
        self,
        school_id: uuid.UUID,
        class_ids: list[uuid.UUID],
        numbers: list[str],
        round_id: uuid.UUID,
    ) -> list[uuid.UUID]:
        """Students (in the classes by turns) with granted consent in ``round_id``."""
        version = self.crypto.keyring.current_kek_version
        kek = self.crypto.kek_aead(version)
        keys, students, consents, ids = [], [], [], []
        blind_index = self.crypto.blind_index
        for n, number in enumerate(numbers):
            key_id, raw, student_id, consent_id = (
                uuid.uuid4(),
                new_data_key(),
                uuid.uuid4(),
                uuid.uuid4(),
            )
            cipher = FieldCipher(key_id, raw)
            ids.append(student_id)
            keys.append(
                {
                    "id": key_id,
                    "purpose": "student",
                    "kek_version": version,
                    "wrapped": wrap_with(kek, version, key_id, raw),
                }
            )
            students.append(
                {
                    "id": student_id,
                    "school_id": school_id,
                    "class_id": class_ids[n % len(class_ids)],
                    "code": new_student_code(),
                    "data_key_id": key_id,
                    "student_no_bidx": blind_index("student_no", number, str(school_id)),
                    "national_id_bidx": os.urandom(8),
                    "bidx_version": self.crypto.keyring.blind_index_version,
                    **seal_values(
                        cipher,
                        Student,
                        student_id,
                        {
                            "full_name": f"压力测试{number}",
                            "gender": "female" if n % 2 else "male",
                            "birth_date": self.today.replace(year=self.today.year - 13),
                            "student_no": number,
                            "national_id": None,
                            "address": None,
                            "guardians": None,
                        },
                    ),
                }
            )
            consents.append(
                {
                    "id": consent_id,
                    "round_id": round_id,
                    "student_id": student_id,
                    **seal_values(
                        cipher,
                        Consent,
                        consent_id,
                        {"decision": "granted", "guardian_name": "家长", "recorded_on": self.today},
                    ),
                }
            )
        for model, rows in ((DataKey, keys), (Student, students), (Consent, consents)):
            for start in range(0, len(rows), 1000):
                await self.session.execute(
                    insert(cast(Table, model.__table__)), rows[start : start + 1000]
                )
        return ids


async def _seed_database(site: Site) -> World:
    from casemgr.db import create_engine, create_sessionmaker, transaction

    crypto = Crypto(KeyRing(site.keys_dir))
    engine = create_engine(site.database_url)
    sessions = create_sessionmaker(engine)
    original = passwords.hash_password
    passwords.hash_password = _cached_hash  # type: ignore[assignment]
    try:
        async with transaction(sessions) as session:
            seed = _Seeder(session, crypto, site)
            schools = []
            for s, letter in enumerate("AB"):
                school = await add_school(
                    session, name=f"压力测试学校{letter}", code=f"STRESS-{letter}", stage="junior"
                )
                classes = [
                    await add_class(
                        session,
                        school_id=school.id,
                        name=f"七年级{c + 1}班",
                        grade=7,
                        school_year=seed.year,
                    )
                    for c in range(CLASSES_PER_SCHOOL)
                ]
                round_id = await seed.round(school.id, [c.id for c in classes])
                class_worlds = []
                for c, school_class in enumerate(classes):
                    numbers = [f"S{s}{c}{n:03d}" for n in range(STUDENTS_PER_CLASS)]
                    ids = await seed.students(school.id, [school_class.id], numbers, round_id)
                    teacher = await seed.account(
                        f"stress.ct.{letter.lower()}{c}",
                        Role.CLASS_TEACHER,
                        school.id,
                        (school_class.id,),
                    )
                    class_worlds.append(
                        ClassWorld(
                            str(school_class.id),
                            school_class.name,
                            teacher,
                            [str(i) for i in ids],
                            numbers,
                        )
                    )
                schools.append(
                    SchoolWorld(
                        id=str(school.id),
                        leader=await seed.account(
                            f"stress.leader.{letter.lower()}", Role.SCHOOL_LEADER, school.id
                        ),
                        counselors=[
                            await seed.account(
                                f"stress.counselor.{letter.lower()}{n}", Role.COUNSELOR, school.id
                            )
                            for n in range(COUNSELORS_PER_SCHOOL)
                        ],
                        classes=class_worlds,
                        round_id=str(round_id),
                    )
                )
            bulk_school = await add_school(
                session, name="压力测试学校C", code="STRESS-C", stage="junior"
            )
            bulk_classes = [
                await add_class(
                    session,
                    school_id=bulk_school.id,
                    name=f"八年级{c + 1}班",
                    grade=8,
                    school_year=seed.year,
                )
                for c in range(BULK_CLASSES)
            ]
            bulk_round = await seed.round(bulk_school.id, [c.id for c in bulk_classes])
            bulk_numbers = [f"C{n:06d}" for n in range(BULK_STUDENTS)]
            await seed.students(
                bulk_school.id, [c.id for c in bulk_classes], bulk_numbers, bulk_round
            )
            bulk = BulkWorld(
                id=str(bulk_school.id),
                leader=await seed.account("stress.leader.c", Role.SCHOOL_LEADER, bulk_school.id),
                counselor=await seed.account("stress.counselor.c", Role.COUNSELOR, bulk_school.id),
                class_names=[c.name for c in bulk_classes],
                round_id=str(bulk_round),
                numbers=bulk_numbers,
            )
    finally:
        passwords.hash_password = original  # type: ignore[assignment]
        await engine.dispose()
    return World(calendar_school_year(), schools, bulk)


async def _seed_through_the_api(world: World, port: int) -> None:
    """Results of each school's round, and the open case files, as users make them."""
    today = clock.today().isoformat()

    async def results(s: int, school: SchoolWorld) -> None:
        numbers = [n for cls in school.classes for n in cls.numbers]
        async with connections(port, 1) as (conn,):
            answer = await conn.request(
                "POST",
                f"/api/v1/screening/rounds/{school.round_id}/results",
                token=school.counselors[0].token,
                body=phq9_csv(numbers, today, seed=s),
                content_type="text/csv",
            )
        assert answer.status == 200, answer.body

    async def files(cls: ClassWorld) -> None:
        async with connections(port, 1) as (conn,):
            for student_id in cls.students[:FILES_PER_CLASS]:
                answer = await conn.request(
                    "POST",
                    "/api/v1/cases",
                    token=cls.teacher.token,
                    json_body={"student_id": student_id, "reason": "压力测试：关爱对象建档"},
                )
                assert answer.status == 201, answer.body
                cls.cases[student_id] = answer.json()["id"]

    await asyncio.gather(
        *(results(s, school) for s, school in enumerate(world.schools)),
        *(files(cls) for school in world.schools for cls in school.classes),
    )


def build_site(site: Site, log: Path) -> World:
    """Keys, migrations and the whole world in ``site``; its chain sealed at the end."""
    create_key_ring(site.keys_dir)
    site.var_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(upgrade(site.database_url))
    world = asyncio.run(_seed_database(site))
    with serving(Server(site, log)) as (server,):
        asyncio.run(_seed_through_the_api(world, server.port))
        assert server.stop()
    for school in world.schools:
        rows = site.query(
            select(ScreeningResult.student_id, ScreeningResult.id).where(
                ScreeningResult.round_id == uuid.UUID(school.round_id)
            )
        )
        school.results = {str(student): str(result) for student, result in rows}
        assert len(school.results) == CLASSES_PER_SCHOOL * STUDENTS_PER_CLASS
    keyring = KeyRing(site.keys_dir)

    async def seal(sessions: async_sessionmaker[AsyncSession]) -> None:
        await audit.seal(sessions, keyring, site.settings())

    site.run(seal)
    return world
