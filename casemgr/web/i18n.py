"""Languages of the pages: Simplified Chinese by default, English by choice.

Catalogues are gettext ``.po`` files under ``translations/`` (extracted with ``make
i18n``), read with Babel when the application starts: no compiled ``.mo`` files are kept
in the repository. Dates follow the reader's language through Babel's CLDR data.
"""

from __future__ import annotations

import functools
import io
from datetime import date, datetime
from pathlib import Path

from babel import Locale
from babel.dates import format_date, format_datetime, get_timezone
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"
DOMAIN = "messages"
DEFAULT_LANG = "zh_Hans"
LANGS = ("zh_Hans", "en")
# The value of <html lang> (BCP 47) and the locale dates are written in.
HTML_LANG = {"zh_Hans": "zh-Hans", "en": "en"}
DATE_LOCALE = {"zh_Hans": "zh_Hans_CN", "en": "en_GB"}
TIME_ZONE = "Asia/Shanghai"


def N_(message: str) -> str:  # the conventional name message extraction looks for
    """Mark a message for extraction; it is translated where it is shown."""
    return message


def catalogue_path(lang: str) -> Path:
    return TRANSLATIONS_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(lang: str) -> Translations:
    """The catalogue of ``lang``, read from its ``.po`` file once per process.

    Fuzzy entries are left out (``write_mo`` skips them), so an unchecked translation
    shows the English source instead of a guess.
    """
    if lang not in LANGS:
        lang = DEFAULT_LANG
    with catalogue_path(lang).open("rb") as source:
        catalog = read_po(source, locale=Locale.parse(lang), domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def pick(lang: str | None) -> str:
    return lang if lang in LANGS else DEFAULT_LANG


def show_date(value: date | datetime | None, lang: str, form: str = "medium") -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.date()
    return format_date(value, format=form, locale=DATE_LOCALE[pick(lang)])


def show_datetime(value: datetime | None, lang: str) -> str:
    if value is None:
        return ""
    return format_datetime(
        value, format="short", tzinfo=get_timezone(TIME_ZONE), locale=DATE_LOCALE[pick(lang)]
    )
