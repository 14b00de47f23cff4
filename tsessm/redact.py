"""Credentials never leave the process: one helper masks them wherever a URI or a message that
may hold one is printed or logged (tracking URIs, storage URLs, artifact locations, errors)."""
from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host; scheme://token@host -> scheme://***@host.
# The user info runs to the last "@" before the host (a password may hold an unescaped "@").
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/\s?#]*)@")
# ?password=...&access_token=... -> ?password=***&access_token=***
_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:[a-z0-9_.-]*(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key"
                    r"|credential|signature)|sig|key)=)(?P<value>[^&;\s#]*)")


def _masked_userinfo(match: re.Match) -> str:
    user, colon, _ = match["info"].partition(":")
    return f"{match['scheme']}{user}:***@" if colon else f"{match['scheme']}***@"


def mask(text: object) -> str:
    """`text` with every password or token in a URL's user info or query replaced by ***."""
    out = _USERINFO.sub(_masked_userinfo, str(text))
    return _QUERY.sub(lambda m: f"{m['key']}***", out)
