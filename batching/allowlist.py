"""The Graph operations this app will send on behalf of its managed identity, and the shape
every part of a request must have before it is sent.

The identity holds tenant-wide write permissions, so nothing outside this list is sent,
whatever a message asks for. Each entry names the application permission it needs; the
Bicep template grants exactly the union of those.

The same checks run at intake (on what a caller wrote, output references still in place) and
just before sending (on the operation as it will leave, references resolved), so they never
echo what they check: a message names the part that is wrong, never its value.

URLs. What a caller may write, and what is sent:

- relative to the Graph version root (`/users/{id}`), never absolute, `//host` or versioned;
- no control characters, unpaired surrogates or backslashes anywhere;
- the path holds RFC 3986 path characters and `%XX` escapes only; decoded, no segment is
  empty, `.` or `..`, or holds `/`, `\\`, `%` or a control character (so `%2e%2e`, `%2F`, `%5C`
  and double encoding cannot smuggle a new path past the allow-list, which matches the
  decoded segments); non-ASCII letters are sent UTF-8 percent-encoded;
- query options are taken as people write them (`$filter=country eq 'Denmark'`) and sent
  encoded (`%20`): every character outside RFC 3986's query set is percent-encoded, escapes
  already valid are kept, and a `%` that starts no escape is sent as `%25`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote_to_bytes, urlsplit

# Graph's national clouds: the only hosts the token is sent to (`batching.graph.auth`) and an
# `@odata.id` or `@odata.bind` URL may name.
GRAPH_HOSTS: Final = frozenset(
    {
        "graph.microsoft.com",
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    }
)

# An output reference, `{{opId.path}}` (see batching.references).
REFERENCE: Final = re.compile(r"\{\{\s*([^.{}\s]+)((?:\.[^.{}\s]+)*)\s*\}\}")

# Characters never allowed in a URL or header value: C0 and C1 controls, DEL, and unpaired
# surrogates (not Unicode text: they cannot even be encoded to UTF-8).
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_MASK: Final = "\x00"  # stands for one output reference while a URL's structure is checked
_ABSOLUTE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_VERSION_PREFIX = re.compile(r"^/?(v1\.0|beta)(/|$)", re.IGNORECASE)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 3986 pchar (unreserved, sub-delims, ':' and '@') plus '/', escapes, references and
# non-ASCII letters (sent percent-encoded).
_PATH_OK = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/\x00]|%[0-9A-Fa-f]{2}|[^\x00-\x7f])*")
# Query characters sent as they are: RFC 3986 `query`, escapes and references.
_QUERY_ENCODE = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%\x00]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@dataclass(frozen=True, slots=True)
class AllowedOperation:
    """One method on one Graph path shape, and the permission it needs."""

    method: str
    template: str
    permission: str

    @property
    def segments(self) -> tuple[str, ...]:
        """The template's path segments; `{id}` stands for any one valid segment, and `{key}`
        inside a segment (`groups(uniqueName='{key}')`) for an OData string literal's text,
        quotes doubled."""
        return tuple(self.template.split("/")[1:])


ALLOWED_OPERATIONS: Final[tuple[AllowedOperation, ...]] = (
    # Users
    AllowedOperation("GET", "/users", "User.ReadWrite.All"),
    AllowedOperation("POST", "/users", "User.ReadWrite.All"),
    AllowedOperation("GET", "/users/{id}", "User.ReadWrite.All"),
    AllowedOperation("PATCH", "/users/{id}", "User.ReadWrite.All"),
    AllowedOperation("DELETE", "/users/{id}", "User.ReadWrite.All"),
    AllowedOperation("GET", "/users/{id}/manager", "User.ReadWrite.All"),
    AllowedOperation("PUT", "/users/{id}/manager/$ref", "User.ReadWrite.All"),
    AllowedOperation("DELETE", "/users/{id}/manager/$ref", "User.ReadWrite.All"),
    AllowedOperation("POST", "/users/{id}/assignLicense", "LicenseAssignment.ReadWrite.All"),
    AllowedOperation("GET", "/users/{id}/memberOf", "User.ReadWrite.All"),
    # Groups and membership
    AllowedOperation("GET", "/groups", "Group.ReadWrite.All"),
    AllowedOperation("POST", "/groups", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/groups/{id}", "Group.ReadWrite.All"),
    AllowedOperation("PATCH", "/groups/{id}", "Group.ReadWrite.All"),
    AllowedOperation("DELETE", "/groups/{id}", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/groups/{id}/members", "Group.ReadWrite.All"),
    AllowedOperation("POST", "/groups/{id}/members/$ref", "Group.ReadWrite.All"),
    AllowedOperation("DELETE", "/groups/{id}/members/{id}/$ref", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/groups/{id}/owners", "Group.ReadWrite.All"),
    AllowedOperation("POST", "/groups/{id}/owners/$ref", "Group.ReadWrite.All"),
    AllowedOperation("DELETE", "/groups/{id}/owners/{id}/$ref", "Group.ReadWrite.All"),
    # A group by its alternate key: the upsert (`Prefer: create-if-missing`) and its read.
    AllowedOperation("PATCH", "/groups(uniqueName='{key}')", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/groups(uniqueName='{key}')", "Group.ReadWrite.All"),
    # Teams and channels
    AllowedOperation("PUT", "/groups/{id}/team", "Team.Create"),
    AllowedOperation("POST", "/teams", "Team.Create"),
    AllowedOperation("GET", "/teams/{id}", "Group.ReadWrite.All"),
    # The async operation `POST /teams` answers with (202 + Location): followed to its team id.
    AllowedOperation("GET", "/teams/{id}/operations/{id}", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/teams/{id}/channels", "Channel.Create"),
    AllowedOperation("POST", "/teams/{id}/channels", "Channel.Create"),
    # Calendars
    AllowedOperation("POST", "/users/{id}/events", "Calendars.ReadWrite"),
    AllowedOperation("POST", "/groups/{id}/events", "Calendars.ReadWrite"),
    AllowedOperation("GET", "/users/{id}/events/{id}", "Calendars.ReadWrite"),
    AllowedOperation("GET", "/groups/{id}/events/{id}", "Calendars.ReadWrite"),
    AllowedOperation("GET", "/users/{id}/calendar/calendarPermissions", "Calendars.ReadWrite"),
    AllowedOperation("POST", "/users/{id}/calendar/calendarPermissions", "Calendars.ReadWrite"),
    AllowedOperation("PATCH", "/users/{id}/calendar/calendarPermissions/{id}", "Calendars.ReadWrite"),
)

# `{key}` inside a template segment: an OData string literal's text, every quote doubled.
KEY_PLACEHOLDER: Final = "{key}"
_KEY_TEXT: Final = "((?:[^']|'')+)"


def _segment_matcher(segment: str) -> str | re.Pattern[str]:
    """How a template segment matches a decoded, lower-cased path segment: `{id}`, a literal
    word, or a pattern for a segment with a `{key}` in it."""
    lowered = segment.lower()
    if KEY_PLACEHOLDER not in lowered:
        return lowered
    before, after = lowered.split(KEY_PLACEHOLDER, 1)
    return re.compile(re.escape(before) + _KEY_TEXT + re.escape(after))


_BY_METHOD: Final = {
    method: tuple(
        (op, tuple(_segment_matcher(s) for s in op.segments))
        for op in ALLOWED_OPERATIONS
        if op.method == method
    )
    for method in {op.method for op in ALLOWED_OPERATIONS}
}


def required_permissions() -> frozenset[str]:
    """Every Graph application permission the allow-listed operations need."""
    return frozenset(op.permission for op in ALLOWED_OPERATIONS)


# --- URLs ----------------------------------------------------------------------------------


def _mask(text: str) -> tuple[str, list[str]]:
    """`text` with every output reference replaced by one `_MASK`, and the references.

    Only for text without control characters (so `_MASK` cannot already be in it)."""
    spans: list[str] = []

    def keep(match: re.Match[str]) -> str:
        spans.append(match.group(0))
        return _MASK

    return REFERENCE.sub(keep, text), spans


def _unmask(text: str, spans: list[str]) -> str:
    pieces = text.split(_MASK)
    out = [pieces[0]]
    for span, piece in zip(spans, pieces[1:], strict=True):
        out.append(span)
        out.append(piece)
    return "".join(out)


def _split(masked: str) -> tuple[str, str | None]:
    path, mark, query = masked.partition("?")
    return path, (query if mark else None)


def _decode(raw: str) -> str | None:
    """A path segment percent-decoded as UTF-8, or None when its escapes are not UTF-8."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _segment_problem(raw: str) -> str | None:
    """Why one raw path segment (references masked) cannot be sent, or None."""
    if not raw:
        return "may not contain an empty path segment (// or a trailing /)"
    decoded = _decode(raw.replace(_MASK, "r"))
    if decoded is None:
        return "has percent-escapes in the path that are not UTF-8"
    if decoded in {".", ".."}:
        return "may not contain . or .. path segments, plain or percent-encoded"
    if "/" in decoded or "\\" in decoded:
        return "may not contain an encoded / or \\ (%2F, %5C) in the path"
    if "%" in decoded:
        return "may not contain an encoded % (%25) in the path"
    if _FORBIDDEN.search(decoded):
        return "may not contain encoded control characters in the path"
    return None


def url_problem(url: str) -> str | None:
    """Why a Graph URL (relative to the version root, output references allowed) cannot be
    sent, or None. Never echoes the URL."""
    if not url:
        return "may not be empty"
    if _FORBIDDEN.search(url):
        return "may not contain control characters or unpaired surrogates"
    if "\\" in url:
        return "may not contain backslashes"
    if url.startswith("//") or _ABSOLUTE_URL.match(url):
        return "must be relative to the Graph version root, e.g. /users/{id}"
    masked, _ = _mask(url)
    path, _query = _split(masked)
    if _VERSION_PREFIX.match(path):
        return "leave out the Graph version: /users, not /v1.0/users"
    if "#" in path:
        return "may not contain # in the path (write %23)"
    if not _PATH_OK.fullmatch(path):
        if _BAD_ESCAPE.search(path):
            return "has a % in the path that does not start a %XX escape"
        if any(ch.isspace() for ch in path):
            return "may contain spaces only in query options (after ?); write %20 in the path"
        return "the path may hold only letters, digits, - . _ ~ ! $ & ' ( ) * + , ; = : @ / and %XX escapes"
    if not path.startswith("/"):
        path = f"/{path}"
    for segment in path.split("/")[1:]:
        problem = _segment_problem(segment)
        if problem:
            return problem
    return None


def url_as_sent(url: str) -> str:
    """The URL exactly as it will be sent to Graph: a leading `/`, the path unchanged but for
    non-ASCII letters (UTF-8 percent-encoded), the query percent-encoded where RFC 3986 asks
    (spaces as `%20`, a stray `%` as `%25`), valid escapes and output references kept.

    Idempotent. Only for a URL `url_problem` accepts; raises ValueError otherwise.
    """
    if url_problem(url) is not None:
        raise ValueError("not a URL this app sends")
    masked, spans = _mask(url)
    path, query = _split(masked)
    if not path.startswith("/"):
        path = f"/{path}"
    path = _NON_ASCII.sub(lambda m: quote(m.group(0), safe=""), path)
    sent = path
    if query is not None:
        sent += "?" + _QUERY_ENCODE.sub(lambda m: quote(m.group(0), safe=""), query)
    return _unmask(sent, spans)


def path_of(url: str) -> str:
    """The path part of a URL (everything before the first `?` outside a reference)."""
    if _FORBIDDEN.search(url):
        return url.split("?", 1)[0]
    masked, spans = _mask(url)
    path, _ = _split(masked)
    return _unmask(path, spans[: path.count(_MASK)])


def find_allowed(method: str, path: str) -> AllowedOperation | None:
    """The allow-list entry for `method path`, if any.

    `path` is the URL's path (a query after `?` is ignored). It is matched after decoding,
    segment by segment: a path that is malformed, or that could mean another path once
    decoded (`%2e%2e`, `%2F`, `%5C`, double encoding), matches nothing.
    """
    candidates = _BY_METHOD.get(method)
    if not candidates or _FORBIDDEN.search(path) or "\\" in path:
        return None
    masked, _ = _mask(path)
    masked, _query = _split(masked)
    if "#" in masked or not _PATH_OK.fullmatch(masked):
        return None
    if not masked.startswith("/"):
        masked = f"/{masked}"
    raw_segments = masked.split("/")[1:]
    if any(_segment_problem(segment) for segment in raw_segments):
        return None
    # (decoded text, whether a reference stands in it): a reference may stand for an id or
    # for a key's text, never for a word of the path.
    decoded = [((_decode(s.replace(_MASK, "r")) or "").lower(), _MASK in s) for s in raw_segments]
    for op, template in candidates:
        if len(template) == len(decoded) and all(
            _segment_matches(want, got, referenced)
            for want, (got, referenced) in zip(template, decoded, strict=True)
        ):
            return op
    return None


def _segment_matches(want: str | re.Pattern[str], got: str, referenced: bool) -> bool:
    if want == "{id}":
        return True
    if isinstance(want, re.Pattern):
        return want.fullmatch(got) is not None
    return not referenced and got == want


_VOCABULARY: Final = frozenset(
    segment.lower() for op in ALLOWED_OPERATIONS for segment in op.segments if "{" not in segment
)
_SPELLING: Final = {
    segment.lower(): segment for op in ALLOWED_OPERATIONS for segment in op.segments if "{" not in segment
}


def path_shape(path: str) -> str:
    """A path as the allow-list sees it, safe to show: segments that are words of the
    allow-list are kept, every other segment (an id, or anything a caller wrote) is `*`.

    `/users/ada@contoso.com/licenseDetails` -> `/users/*/*`; never echoes a caller's value."""
    if _FORBIDDEN.search(path):
        return "(a path with control characters)"
    masked, _ = _mask(path)
    masked, _query = _split(masked)
    segments = masked.lstrip("/").split("/")
    shown = []
    for segment in segments:
        decoded = _decode(segment) if _MASK not in segment else None
        key = decoded.lower() if decoded is not None else None
        shown.append(_SPELLING[key] if key is not None and key in _VOCABULARY else "*")
    return "/" + "/".join(shown)


# --- headers -------------------------------------------------------------------------------

# The request headers a caller may set on an operation, by lower-case name. Graph needs no
# others for the allow-listed calls; the app owns credentials and transport framing.
ALLOWED_HEADERS: Final[Mapping[str, str]] = {
    name.lower(): name
    for name in (
        "Content-Type",  # a body's media type; JSON only (`application/json`)
        "ConsistencyLevel",  # `eventual`: advanced directory queries ($count, $search, ...)
        "Prefer",  # e.g. `return=minimal`, `outlook.timezone="..."` for events
        "If-Match",  # optimistic concurrency with an etag
        "If-None-Match",
        "Accept",  # `application/json`
        "Accept-Language",  # language of localized answers
        "client-request-id",  # the caller's own trace id for the item
    )
}
# Named in the refusal, so a caller knows why: the app sets these itself.
_APP_OWNED_HEADERS: Final[Mapping[str, str]] = {
    name.lower(): name
    for name in (
        "Authorization",
        "Host",
        "Cookie",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Proxy-Authorization",
        "X-Forwarded-For",
        "X-Forwarded-Host",
    )
}
MAX_HEADERS: Final = 16
MAX_HEADER_VALUE_LENGTH: Final = 1024
# RFC 7230 `token`: the only characters a header name may have (no space, no colon).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Header values: visible ASCII and spaces only (no CR, LF, NUL, tab or other controls).
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
_JSON_MEDIA_TYPE = re.compile(r"application/json\s*(;.*)?", re.IGNORECASE)


def header_value_problem(canonical_name: str, value: object) -> str | None:
    """Why an allow-listed header's value cannot be sent, or None."""
    if not isinstance(value, str):
        return f"{canonical_name} must be text"
    if not _HEADER_VALUE.fullmatch(value):
        return f"{canonical_name} may hold only printable ASCII (no CR, LF, NUL or other control characters)"
    if len(value) > MAX_HEADER_VALUE_LENGTH:
        return f"{canonical_name} is longer than {MAX_HEADER_VALUE_LENGTH} characters"
    if canonical_name == "Content-Type" and not _JSON_MEDIA_TYPE.fullmatch(value):
        return "Content-Type must be application/json: bodies are sent as JSON"
    return None


def header_problems(headers: Mapping[str, Any]) -> list[str]:
    """Why an operation's headers cannot be sent (empty when they can). Names are matched
    case-insensitively against `ALLOWED_HEADERS`, exactly: `"Authorization "` or
    `"Authorization:"` is not a header name, and is refused, not trimmed."""
    problems: list[str] = []
    if len(headers) > MAX_HEADERS:
        return [f"at most {MAX_HEADERS} headers may be given"]
    seen: set[str] = set()
    for position, (name, value) in enumerate(headers.items(), start=1):
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            problems.append(f"header {position}: the name is not a valid HTTP header name")
            continue
        key = name.lower()
        if key in _APP_OWNED_HEADERS:
            problems.append(f"header {_APP_OWNED_HEADERS[key]} is set by the app and may not be given")
            continue
        if key not in ALLOWED_HEADERS:
            allowed = ", ".join(ALLOWED_HEADERS.values())
            problems.append(f"header {position} is not one the app passes to Graph (allowed: {allowed})")
            continue
        canonical = ALLOWED_HEADERS[key]
        if key in seen:
            problems.append(f"header {canonical} is given more than once")
            continue
        seen.add(key)
        problem = header_value_problem(canonical, value)
        if problem:
            problems.append(f"header {problem}")
    return problems


# --- @odata.id / @odata.bind ---------------------------------------------------------------

# Directory collections an object reference may name (members, owners, manager).
_REFERENCE_COLLECTIONS: Final = frozenset(
    {"directoryobjects", "users", "groups", "serviceprincipals", "devices", "orgcontacts", "contacts"}
)
_OBJECT_URL = re.compile(
    r"https://(?P<host>[^/?#]*)/(?P<version>v1\.0|beta)/(?P<collection>[^/?#]+)/(?P<id>[^/?#]+)",
    re.IGNORECASE,
)
# The key form Graph's Teams pages write (`.../users('{id}')`, `.../groups('{id}')`,
# `.../teamsTemplates('standard')` in `POST /teams` bodies).
_OBJECT_KEY_URL = re.compile(
    r"https://(?P<host>[^/?#]*)/(?P<version>v1\.0|beta)/(?P<collection>[A-Za-z]+)\('(?P<id>[^'/?#()]+)'\)",
    re.IGNORECASE,
)
_KEY_FORM_COLLECTIONS: Final = frozenset({*_REFERENCE_COLLECTIONS, "teamstemplates"})


def object_url_problem(value: object, graph_hosts: frozenset[str] = GRAPH_HOSTS) -> str | None:
    """Why a value cannot be an `@odata.id` / `@odata.bind` object URL, or None.

    Accepted: `https://{graph host}/{v1.0|beta}/{collection}/{id}`, the form Graph's docs use
    (`https://graph.microsoft.com/v1.0/directoryObjects/{id}`), with the host one of
    `graph_hosts` (by default every national cloud; at send time pass the configured one) and
    the collection a directory collection; or the key form of Graph's Teams pages
    (`.../users('{id}')`, `.../groups('{id}')`, `.../teamsTemplates('standard')`). No other
    host, no `http:`, no user info, no port, no query or fragment, one id segment under the
    same rules as a URL path segment. The relative form (`directoryObjects/{id}`) is not
    documented by Graph and is refused. An output reference may stand for the id (intake); it
    is checked again once resolved.
    """
    what = "must be an https URL of a directory object on the Graph host, e.g. https://graph.microsoft.com/v1.0/directoryObjects/{id}"
    if not isinstance(value, str) or not value:
        return what
    if _FORBIDDEN.search(value) or "\\" in value:
        return "may not contain control characters, unpaired surrogates or backslashes"
    masked, _ = _mask(value)
    match = _OBJECT_URL.fullmatch(masked)
    key_form = match is None
    match = match or _OBJECT_KEY_URL.fullmatch(masked)
    if match is None:
        return what
    if match.group("host").lower() not in graph_hosts:
        return "must name the Graph host (" + ", ".join(sorted(graph_hosts)) + "), with no user info or port"
    if match.group("collection").lower() not in (
        _KEY_FORM_COLLECTIONS if key_form else _REFERENCE_COLLECTIONS
    ):
        return (
            "must name a directory object "
            "(directoryObjects, users, groups, servicePrincipals, devices, orgContacts, contacts)"
        )
    object_id = match.group("id")
    if not _PATH_OK.fullmatch(object_id):
        return "has an id with characters a URL path may not hold"
    return _segment_problem(object_id)


def object_url_hosts(graph_base_url: str) -> frozenset[str]:
    """The hosts object URLs may name when sending to `graph_base_url`: that cloud's host
    alone, or every Graph host when the base URL is not one (the local emulator, which reads
    only the id)."""
    host = (urlsplit(graph_base_url).hostname or "").lower()
    return frozenset({host}) if host in GRAPH_HOSTS else GRAPH_HOSTS


def _object_refs(body: Any) -> Iterator[tuple[str, object]]:
    """(kind, value) for every `@odata.id` and `...@odata.bind` value in a JSON body."""
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                lowered = key.lower() if isinstance(key, str) else ""
                if lowered == "@odata.id":
                    yield "@odata.id", item
                elif lowered.endswith("@odata.bind"):
                    for bound in item if isinstance(item, list) else [item]:
                        yield "@odata.bind", bound
                else:
                    stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def object_url_problems(body: Any, graph_hosts: frozenset[str] = GRAPH_HOSTS) -> list[str]:
    """Why the object URLs in a body (`@odata.id`, `members@odata.bind`, ...) cannot be sent."""
    problems: dict[str, None] = {}
    for kind, value in _object_refs(body):
        problem = object_url_problem(value, graph_hosts)
        if problem:
            problems[f"an {kind} value {problem}"] = None
    return list(problems)


# --- the whole operation, as it will be sent --------------------------------------------------


def sendable_problems(
    method: str,
    url: str,
    headers: Mapping[str, Any],
    body: Any,
    *,
    graph_hosts: frozenset[str] = GRAPH_HOSTS,
) -> list[str]:
    """Every reason an operation, references resolved, may not be sent (empty when it may).

    The send-time gate, whatever door the work came through: the URL is well formed, already
    in its sent form and on the allow-list; headers are allow-listed and clean; object URLs
    in the body name the Graph host. Messages never echo values.
    """
    problems: list[str] = []
    problem = url_problem(url)
    if problem:
        problems.append(f"url {problem}")
    elif url_as_sent(url) != url:
        problems.append("url is not encoded as it must be sent")
    elif REFERENCE.search(url):
        problems.append("url still holds an output reference")
    elif find_allowed(method, path_of(url)) is None:
        problems.append(f"{method} on this path is not an allowed operation")
    problems.extend(header_problems(headers))
    problems.extend(object_url_problems(body, graph_hosts))
    return problems
