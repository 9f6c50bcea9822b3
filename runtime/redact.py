"""Camera credentials never reach a log line, an error, /healthz or /metrics.

A camera source can hold a secret in three places: a URL's userinfo (`rtsp://user:pass@host`), its
query string (`http://cam/video?user=admin&pwd=secret`), and in a GStreamer pipeline, an element's
URL or its credential properties (`rtspsrc location=rtsp://... user-id=admin user-pw=secret`).
`redact` masks all of them in any text; given the source too, it also masks the source's secrets
wherever they appear verbatim (a library's error message quoting part of the URL, say).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
# scheme://userinfo@ : the userinfo ends at the last "@" before the path (a careless password may hold "@").
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s!\"']*@")
_QUERY = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s!\"'?#]*\?)[^\s!\"'#]*")
_PROPERTY = re.compile(r"(?i)\b((?:user|proxy)-(?:id|pw)|password|passwd|pwd|pass|passphrase|token|key)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s!]+)")
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s!\"']+")
_MIN_SECRET = 3  # shorter literals would mask ordinary words; the patterns above still catch them in place


def redact(text: object, source: object = None) -> str:
    """`text` with every credential masked; `source` (a camera source) adds its secrets as literals."""
    out = str(text)
    for secret in sorted(secrets(source), key=len, reverse=True) if source is not None else ():
        out = out.replace(secret, MASK)
    out = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", out)
    out = _QUERY.sub(lambda m: m.group(1) + MASK, out)
    return _PROPERTY.sub(lambda m: m.group(1) + "=" + MASK, out)


def secrets(source: object) -> set[str]:
    """The literal secrets in a camera source: userinfo, query values, credential properties."""
    text = str(source)
    found: set[str] = set()
    for url in _URL.findall(text):
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo = netloc.rsplit("@", 1)[0]
            found.add(userinfo)
            found.update(userinfo.split(":", 1))
        found.update(v for _, v in parse_qsl(parts.query, keep_blank_values=False))
        if parts.query:
            found.add(parts.query)
    for m in _PROPERTY.finditer(text):
        found.add(m.group(2).strip("\"'"))
    found |= {unquote(s) for s in found}
    return {s for s in found if len(s) >= _MIN_SECRET}
