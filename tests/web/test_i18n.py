"""Chinese by default, English by choice; every message translated; dates as readers
write them."""

from __future__ import annotations

from datetime import date

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from casemgr.settings import PROJECT_ROOT
from casemgr.web import i18n
from tests.web.helpers import post_form, sign_in

METHOD_MAP = [
    ("casemgr/web/**.py", "python"),
    ("casemgr/web/templates/**.html", "jinja2"),
]


def extracted() -> set[str]:
    found = set()
    for _, _, message, _, _ in extract_from_dir(
        str(PROJECT_ROOT),
        METHOD_MAP,
        options_map={
            "casemgr/web/templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}
        },
        keywords={"_": None, "gettext": None, "ngettext": (1, 2), "N_": None},
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def catalogue(lang: str) -> dict[str, str]:
    with i18n.catalogue_path(lang).open("rb") as source:
        return {m.id: m.string for m in read_po(source) if m.id and not m.fuzzy}


def test_every_message_has_a_chinese_translation():
    zh = catalogue("zh_Hans")
    messages = extracted()
    assert len(messages) > 200
    missing = sorted(m for m in messages if not zh.get(m))
    assert missing == [], "run `make i18n` and translate these"


def test_placeholders_survive_translation():
    for message, translation in catalogue("zh_Hans").items():
        for placeholder in ("%(k)s",):
            assert (placeholder in message) == (placeholder in translation), message


def test_chinese_by_default_english_by_choice_and_remembered(client):
    page = client.get("/")
    assert '<html lang="zh-Hans">' in page.text and "登录" in page.text
    response = post_form(client, "/language", {"lang": "en", "next": "/"}, from_page="/")
    assert response.status_code == 303
    assert "casemgr_lang=en" in response.headers["set-cookie"]
    assert "Max-Age=31536000" in response.headers["set-cookie"]
    page = client.get("/")
    assert '<html lang="en">' in page.text and "Sign in" in page.text
    post_form(client, "/language", {"lang": "zh_Hans", "next": "/"}, from_page="/")
    assert '<html lang="zh-Hans">' in client.get("/").text
    # Anything else falls back to Chinese.
    client.cookies.set("casemgr_lang", "xx", domain="testserver.local")
    assert '<html lang="zh-Hans">' in client.get("/").text


def test_language_survives_sign_in_and_dates_follow_it(client, world, case_a1):
    post_form(client, "/language", {"lang": "en", "next": "/"}, from_page="/")
    sign_in(client, world["ct_a1"])
    html = client.get(f"/cases/{case_a1}").text
    assert "Case file" in html
    assert i18n.show_date(date(2027, 3, 1), "en") == "1 Mar 2027"
    assert i18n.show_date(date(2027, 3, 1), "zh_Hans") == "2027年3月1日"
