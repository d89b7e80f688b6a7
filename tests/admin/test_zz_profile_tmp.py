import cProfile
import io
import pstats
import time

from casemgr.students import imports
from casemgr.tabular import XLSX
from tests.admin.helpers import roster_rows, xlsx_body


def test_profile(db, backend):
    from tests.factories import build_world

    world = build_world(db)
    rows = roster_rows(["七年级1班", "七年级2班"], 1500, first=100)
    data = xlsx_body(rows)

    async def body(session):
        return await imports.import_roster(
            session,
            db.crypto,
            world.school_a,
            imports.open_roster(io.BytesIO(data), XLSX),
            actor=None,
        )

    pr = cProfile.Profile()
    pr.enable()
    t = time.perf_counter()
    db.in_transaction(body)
    el = time.perf_counter() - t
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(40)
    print(backend, el)
    print(s.getvalue()[:9000])
