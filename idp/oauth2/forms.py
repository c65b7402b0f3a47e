"""``application/x-www-form-urlencoded`` request bodies for OAuth endpoints (RFC 6749 §3.2, App. B).

Parsed with the standard library rather than python-multipart: one call, and it lets us refuse
repeated parameters, which RFC 6749 §3.1/§3.2 forbids ("MUST NOT be included more than once").
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from .errors import InvalidRequest

MAX_PARAMS = 32
#: Parameters that may legitimately repeat (RFC 8707 allows several ``resource`` values).
REPEATABLE = frozenset({"resource"})


class Form:
    def __init__(self, params: dict[str, list[str]]) -> None:
        self._params = params

    def get(self, name: str) -> str | None:
        values = self._params.get(name)
        return values[0] if values else None

    def getall(self, name: str) -> list[str]:
        return list(self._params.get(name, ()))

    def __contains__(self, name: str) -> bool:
        return name in self._params


def parse_form(content_type: str | None, body: bytes) -> Form:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the request body must be application/x-www-form-urlencoded")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_PARAMS,
                          errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("malformed form body") from None
    params: dict[str, list[str]] = {}
    seen: set[str] = set()  # every name sent, empty or not: "scope=&scope=x" repeats scope
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest("malformed form body")
        if name in seen and name not in REPEATABLE:
            raise InvalidRequest(f"parameter {name!r} is repeated")
        seen.add(name)
        if value == "":  # RFC 6749 §3.1: parameters sent without a value are treated as omitted
            continue
        params.setdefault(name, []).append(value)
    return Form(params)
