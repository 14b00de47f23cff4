"""Credentials never leave the process: one helper masks them wherever a URI or a message that
may hold one is printed or logged (tracking URIs, storage URLs, artifact locations, errors)."""
from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<secret>[^/\s@]*)@")
# ?password=...&token=... -> ?password=***&token=***
_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd|token|secret|api_key|access_key|secret_key|sig"
                    r"|signature)=)(?P<value>[^&;\s#]*)")


def mask(text: object) -> str:
    """`text` with every password in a URL's user info or query replaced by ***."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    return _QUERY.sub(lambda m: f"{m['key']}***", out)
