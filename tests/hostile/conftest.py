"""Hostile-input tests run on the access scene (``tests/access/scene.py``): real records on
both sides of every reach boundary, so that generated requests reach real handlers."""

from __future__ import annotations

from typing import Any

import pytest

from casemgr import clock
from tests.access.scene import Scene, build_scene
from tests.care.helpers import TERM_START
from tests.factories import build_world


@pytest.fixture
def world(db: Any) -> Any:
    clock.freeze(TERM_START)
    return build_world(db)


@pytest.fixture
def scene(client: Any, world: Any, db: Any) -> Scene:
    return build_scene(client, world, db)
