"""The access tests run in a known school year, on the scene of ``tests/access/scene.py``."""

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
