"""An LLM endpoint URL as a request needs it, and as it may be shown or stored.

``http://user:pass@host/v1?token=abc`` is a common way to hand a gateway its credentials. Requests need every
part: ``split_endpoint`` gives the URL without user info and query, the query parameters (sent with every
request) and a Basic authorization value. Everything written or printed uses ``public_url`` (no user info, query
values replaced by ``***``) or ``redact`` (the same for every URL inside a text, e.g. a command line).
"""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def split_endpoint(url: str) -> tuple[str, dict[str, str], str | None]:
    """(URL without user info or query, query parameters, ``Basic ...`` authorization or None)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    auth = None
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, host, parts.path, "", "")), query, auth


def public_url(url: str) -> str:
    """``url`` without user info, every query value replaced by ``***`` (the names stay: they say what was set)."""
    try:
        clean, query, _ = split_endpoint(url)
    except ValueError:  # not a URL urllib can split: show none of it
        return HIDDEN
    if not query:
        return clean
    return clean + "?" + urlencode({k: HIDDEN for k in query}, safe="*", quote_via=quote)


def redact(text: str) -> str:
    """``text`` with every URL in it made public (user info dropped, query values hidden)."""
    return _URL.sub(lambda m: public_url(m.group(0)), text)
