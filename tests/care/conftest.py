"""Care programme tests run in a known school year: the world is built, and time runs,
from the first week of the 2026-2027 year (``clock.freeze``)."""

from __future__ import annotations

from typing import Any

import pytest

from casemgr import clock
from tests.care.helpers import TERM_START, Care
from tests.factories import build_world


@pytest.fixture
def world(db: Any) -> Any:
    clock.freeze(TERM_START)
    return build_world(db)


@pytest.fixture
def care(client: Any, world: Any, db: Any) -> Care:
    return Care(client, world, db)
