"""Stress tests: real service processes, many clients, kills and a database restart.

They are marked ``stress`` and run only when asked for by marker (``make test-stress``,
which ``.ci/run`` runs after ``make test``, alone): a PostgreSQL restart would break every
other test running at that moment, and the load would distort their timings.
"""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stress.harness import PG_ADMIN_URL, Site, pg_admin, pg_dsn
from tests.stress.world import World, build_site

MARKER = "stress"
# How long the concurrency tests load the service (STRESS_SECONDS=60 by default).
LOAD_SECONDS = float(os.environ.get("CASEMGR_STRESS_SECONDS", "60"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave stress tests out unless the marker expression names them (``-m stress``)."""
    if MARKER in (config.getoption("markexpr") or ""):
        return
    chosen = [item for item in items if item.get_closest_marker(MARKER) is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(
            items=[item for item in items if item.get_closest_marker(MARKER) is not None]
        )
        items[:] = chosen


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Site, World]]]:
    built: dict[str, tuple[Site, World]] = {}
    yield built
    for site, _ in built.values():
        site.drop()


def _template(
    backend: str, built: dict[str, tuple[Site, World]], factory: pytest.TempPathFactory
) -> tuple[Site, World]:
    if backend not in built:
        root = factory.mktemp(f"stress-template-{backend}")
        if backend == "sqlite":
            site = Site("sqlite", root, f"sqlite:///{root / 'casemgr.db'}")
        else:
            name = f"casemgr_stress_tpl_{uuid.uuid4().hex[:10]}"
            asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
            site = Site("postgresql", root, pg_dsn(name), name)
        built[backend] = (site, build_site(site, root / "seed.log"))
    return built[backend]


@pytest.fixture(params=["sqlite", "postgresql"])
def stress_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not PG_ADMIN_URL:
        pytest.skip("PostgreSQL not configured (CASEMGR_TEST_PG_URL is empty)")
    return str(request.param)


@pytest.fixture
def stress_site(
    stress_backend: str,
    _templates: dict[str, tuple[Site, World]],
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> Iterator[tuple[Site, World]]:
    """A fresh copy of the seeded county on the test's backend: (site, world)."""
    template, world = _template(stress_backend, _templates, tmp_path_factory)
    site = template.copy(tmp_path / "site")
    try:
        yield site, copy.deepcopy(world)
    finally:
        site.drop()
