"""What a username and a password must be (SPEC §7, OWASP ASVS 5.0 level 2).

Usernames fold to one spelling (NFKC, then lower case) and must then be plain
``[a-z0-9._-]{3,64}``: fullwidth letters become ASCII, ``DEMO.Teacher`` becomes
``demo.teacher`` (and so is taken when that exists), and look-alikes from other scripts
(a Cyrillic ``е``) are refused. Every place a username enters (CLI, API, login) uses this.

Passwords are 12 to 1,024 characters and are refused when zxcvbn (offline, with its
common-password and dictionary lists) rates them guessable (score below 3), with the
reason said in words.
"""

from __future__ import annotations

import re
import unicodedata

from zxcvbn import zxcvbn

USERNAME = re.compile(r"[a-z0-9._-]{3,64}")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MIN_STRENGTH = 3
# zxcvbn's lists are English; these are common building blocks of passwords in China.
LOCAL_WORDS = (
    "woaini",
    "aini",
    "1314",
    "520",
    "5201314",
    "zhang",
    "wang",
    "li",
    "liu",
    "chen",
    "laoshi",
    "xuexiao",
    "jiaoyu",
    "xuesheng",
    "casemgr",
    "qwer",
    "asdf",
)
_ZXCVBN_INPUT = 100  # zxcvbn is quadratic in length; its verdict is settled well before


def normalise_username(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip().lower()


def username_problem(normalised: str) -> str | None:
    if USERNAME.fullmatch(normalised):
        return None
    return "3-64 characters: lower-case letters a-z, digits and . _ - only"


def password_problem(password: str, *context: str) -> str | None:
    """Why a new password is refused, in words, or None when it is acceptable.

    ``context`` names things a guesser would try first (username, display name).
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"at most {MAX_PASSWORD_LENGTH} characters"
    if "\x00" in password:
        return "must not contain NUL characters"
    verdict = zxcvbn(password[:_ZXCVBN_INPUT], user_inputs=[*context, *LOCAL_WORDS])
    if verdict["score"] >= MIN_STRENGTH:
        return None
    warning = verdict["feedback"].get("warning")
    reason = f": {warning.rstrip('.')}" if warning else ""
    return f"too easy to guess{reason}. Use a longer phrase of unrelated words"
