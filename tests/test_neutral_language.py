"""SPEC §7: no stigmatising word anywhere a user could see it.

Everything shipped under casemgr/ (code, templates, message catalogues, static files) and
the policies are scanned, so that a word cannot slip into a message, a label or an export.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = (
    "问题学生",
    "差生",
    "后进生",
    "心理问题学生",
    "问题儿童",
    "高危学生",
    "异常学生",
    "心理疾病",
    "精神病",
    "problem student",
    "troubled student",
    "mentally ill",
)


def _shipped_files() -> list[Path]:
    files = []
    for folder in ("casemgr", "policies"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files.append(path)
    return files


def find_forbidden(paths: list[Path]) -> list[str]:
    hits = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8").casefold()
        except UnicodeDecodeError:
            continue
        hits.extend(f"{path.name}: {word}" for word in FORBIDDEN if word.casefold() in text)
    return hits


def test_no_stigmatising_words_in_what_we_ship():
    files = _shipped_files()
    assert any(p.suffix == ".py" for p in files)
    assert find_forbidden(files) == []


def test_the_scan_covers_the_templates_and_the_catalogues():
    """The web UI's templates and both message catalogues are among the files scanned
    (a move of either out of casemgr/ must not take them out of the scan)."""
    files = _shipped_files()
    names = {p.relative_to(ROOT).as_posix() for p in files}
    assert sum(p.suffix == ".html" for p in files) > 15
    assert "casemgr/web/translations/zh_Hans/LC_MESSAGES/messages.po" in names
    assert "casemgr/web/translations/en/LC_MESSAGES/messages.po" in names
    assert "casemgr/web/templates/base.html" in names


def test_the_scan_finds_a_planted_word(tmp_path):
    planted = tmp_path / "messages.po"
    planted.write_text('msgstr "标签：Problem Student、后进生"', encoding="utf-8")
    assert find_forbidden([planted]) == ["messages.po: 后进生", "messages.po: problem student"]
