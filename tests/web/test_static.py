"""What the pages load: our own files only, the vendored htmx as recorded, no inline
script or style anywhere (the CSP forbids them, so a page using one would break)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from casemgr.web import STATIC_DIR

TEMPLATES = Path(STATIC_DIR).parent / "templates"


def test_vendored_htmx_is_the_recorded_release():
    readme = (STATIC_DIR / "README.md").read_text(encoding="utf-8")
    digest = hashlib.sha256((STATIC_DIR / "htmx.min.js").read_bytes()).hexdigest()
    assert f"`{digest}`" in readme and "| 2.0.11 |" in readme


def test_vendored_axe_is_the_recorded_release():
    here = Path(__file__).parent
    digest = hashlib.sha256((here / "axe.min.js").read_bytes()).hexdigest()
    assert digest in (here / "AXE.md").read_text(encoding="utf-8")


def test_templates_load_nothing_from_elsewhere_and_nothing_inline():
    templates = list(TEMPLATES.rglob("*.html"))
    assert len(templates) > 15
    for path in templates:
        html = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href|action)=["']?(https?:)?//""", html), path
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert "<style" not in html and " style=" not in html, path
        assert not re.search(r"\son[a-z]+=", html), path
        assert "hx-on" not in html and "|safe" not in html and "autoescape false" not in html


def test_every_form_that_posts_carries_the_csrf_field():
    for path in TEMPLATES.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        for form in re.findall(r"<form[^>]*>.*?</form>", html, re.S):
            if 'method="post"' in form:
                assert 'name="csrf_token" value="{{ csrf_token }}"' in form, path


def test_static_files_are_served_with_the_right_types(client):
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    js = client.get("/static/htmx.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert client.get("/static/../app.py").status_code == 404
