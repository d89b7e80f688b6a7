"""The pages in a real browser: Debian's Chromium driven by Playwright, on a phone screen.

The application is served by uvicorn on 127.0.0.1 (an ephemeral port) against the test
database. Without Chromium these tests are skipped with the reason, except in CI
(``CI=true``), where they must run: a missing browser is a failure there.

Screenshots of every landing page in both languages go to
``var/test-artifacts/screenshots/`` (git-ignored); each landing page is checked with
axe-core (``tests/web/axe.min.js``, see AXE.md) and fails on any serious or critical
violation.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from casemgr.settings import Settings
from tests.factories import PASSWORD, Account

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
AXE = Path(__file__).with_name("axe.min.js")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "screenshots"
IN_CI = os.environ.get("CI") == "true"

try:
    from playwright.sync_api import Browser, Page, sync_playwright

    PLAYWRIGHT = True
except ImportError:  # pragma: no cover - the dev extra installs it
    PLAYWRIGHT = False

if not (CHROMIUM.exists() and PLAYWRIGHT):
    reason = (
        "browser tests need Debian's Chromium at /usr/bin/chromium and the playwright"
        " package (scripts/ensure-system-deps installs the first, `make venv` the second)"
    )
    if IN_CI:
        raise RuntimeError(f"CI=true: {reason}")
    pytest.skip(reason, allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The application on 127.0.0.1, served by uvicorn in a thread, for this test only."""
    import uvicorn

    from casemgr.app import create_app

    port = _free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        proxy_headers=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Chromium; ask for it after the fixtures that build data (they run event loops,
    which cannot start while Playwright's synchronous API holds one in this thread)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watch:
    """Console errors and CSP reports of a page: the pages must run without either."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


def new_page(browser: Browser, base: str, viewport: dict[str, int], **options: Any) -> Page:
    context = browser.new_context(locale="zh-CN", viewport=viewport, base_url=base, **options)
    context.set_default_timeout(15_000)
    return context.new_page()


def sign_in(page: Page, account: Account) -> None:
    page.goto("/")
    page.get_by_label("用户名").fill(account.username)
    page.get_by_label("密码").fill(PASSWORD)
    if account.totp_secret:
        page.get_by_label("动态验证码").fill(account.totp_now())
    page.get_by_role("button", name="登录").click()
    page.wait_for_load_state("load")
    assert not page.url.endswith(("/sign-in", "/account")), f"{account.username} not signed in"


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="退出").click()
    page.wait_for_url(re.compile(r"/$"))


def task_kinds(page: Page) -> list[str]:
    return [str(li.get_attribute("data-kind")) for li in page.locator("#tasks li").all()]


@pytest.mark.slow
def test_teacher_counselor_auditor_on_a_phone(
    world: Any,
    case_a1: uuid.UUID,
    screened_a1: uuid.UUID,
    live_server: str,
    browser: Browser,
) -> None:
    # -- the class teacher, on a 390 px phone: a home visit and a support log ------------
    page = new_page(browser, live_server, PHONE)
    watch = Watch(page)
    sign_in(page, world["ct_a1"])
    assert page.url.endswith("/my")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    before = task_kinds(page)
    assert before.count("home_visit") == 2  # both students still owe this year's visit

    page.get_by_label("学生", exact=True).select_option(str(world.students["a1_second"]))
    page.get_by_label("电话").check()
    page.locator("#visit-notes").fill("电话家访：家长反映孩子作息规律。")
    page.get_by_role("button", name="保存家访记录").click()
    page.get_by_text("家访记录已保存。").wait_for()
    after_visit = task_kinds(page)
    assert after_visit.count("home_visit") == 1  # the task list changed in place (HTMX)

    page.get_by_label("一人一册档案").select_option(str(case_a1))
    page.get_by_label("类型").select_option("academic")
    page.locator("#log-notes").fill("课后辅导数学，约定下周再谈。")
    page.get_by_label("跟进日期").fill("2026-12-08")
    page.get_by_role("button", name="保存帮扶记录").click()
    page.get_by_text("帮扶记录已保存。").wait_for()
    assert "support_follow_up" in task_kinds(page)
    sign_out(page)

    # -- the counselor reviews the result and writes guidance -----------------------------
    sign_in(page, world["counselor_a"])
    assert page.url.endswith("/screening")
    page.locator(f'a[href="/screening/results/{screened_a1}"]').click()
    page.get_by_label("帮扶", exact=True).check()
    page.get_by_label("心理教师记录").fill("面谈后认为需要持续支持。")
    guidance = "请每周与该生谈心一次，留意作息变化。"
    page.get_by_label("给教师的指导意见").fill(guidance)
    page.get_by_role("button", name="保存复核").click()
    page.get_by_text("复核已保存。").wait_for()
    sign_out(page)

    # -- the class teacher sees the guidance, and no score --------------------------------
    sign_in(page, world["ct_a1"])
    page.goto(f"/cases/{case_a1}")
    assert guidance in page.locator("#guidance").inner_text()
    text = page.locator("main").inner_text()
    for hidden in ("phq9", "18", "总分", "分级", "critical_item", "moderately_severe"):
        assert hidden not in text
    sign_out(page)

    # -- the auditor filters the access log to the student and sees both accesses --------
    sign_in(page, world["auditor"])
    assert page.url.endswith("/audit")
    page.locator("#verify .status-ok").wait_for()
    page.get_by_label("学生标识").fill(str(world.students["a1_first"]))
    page.get_by_role("button", name="显示").click()
    page.wait_for_load_state("load")
    table = page.locator("#events").inner_text()
    assert str(world["ct_a1"].id) in table
    assert str(world["counselor_a"].id) in table
    assert "screening_result:review" in table
    assert "support_log:write" in table
    assert str(world.students["a1_second"]) not in page.locator("#events").inner_html()
    sign_out(page)

    assert watch.errors == []


def run_axe(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [v for v in result if v.get("impact") in ("serious", "critical")]


LANDINGS = {
    "ct_a1": "/my",
    "teacher_a": "/my",
    "counselor_a": "/screening",
    "leader_a": "/school",
    "admin": "/admin",
    "auditor": "/audit",
}


@pytest.mark.slow
# What is checked here is rendering (layout, language, contrast, labels), the same whatever
# database holds the rows; every page's content is tested on both databases elsewhere.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_landing_pages_screenshots_and_accessibility(
    world: Any, case_a1: uuid.UUID, live_server: str, browser: Browser, backend: str
) -> None:
    """Every landing page and the sign-in page, in both languages, on a phone and a
    desktop: a full-page screenshot each, and no serious or critical axe violation."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: dict[str, list[str]] = {}
    for name, landing in {"sign_in": "/", **LANDINGS}.items():
        # axe is injected as a script of its own: only the checking context lifts CSP.
        # One sign-in per account (a TOTP code is good once), then every view of it.
        page = new_page(browser, live_server, PHONE, bypass_csp=True)
        if name != "sign_in":
            sign_in(page, world[name])
        for lang, switch in (("zh", None), ("en", "English")):
            if switch:
                page.get_by_role("button", name=switch).click()
                page.wait_for_load_state("load")
            for viewport_name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
                page.set_viewport_size(viewport)
                page.goto(landing)
                assert page.url.endswith(landing)
                expected = "zh-Hans" if lang == "zh" else "en"
                assert page.locator("html").get_attribute("lang") == expected
                page.screenshot(
                    path=str(SCREENSHOTS / f"{name}-{lang}-{viewport_name}-{backend}.png"),
                    full_page=True,
                )
                found = run_axe(page)
                if found:
                    problems[f"{name}/{lang}/{viewport_name}"] = [
                        f"{v['id']} ({v['impact']}): {len(v['nodes'])} node(s)" for v in found
                    ]
        page.context.close()
    assert problems == {}


@pytest.mark.slow
def test_back_button_after_sign_out_shows_nothing(
    world: Any, live_server: str, browser: Browser
) -> None:
    page = new_page(browser, live_server, PHONE)
    sign_in(page, world["ct_a1"])
    assert "测试学生001" in page.content()
    sign_out(page)
    page.go_back()
    page.wait_for_load_state("load")
    # no-store: the browser asks again, and the server sends it to the sign-in page.
    assert "测试学生001" not in page.content()
    assert page.locator("#username").count() == 1
