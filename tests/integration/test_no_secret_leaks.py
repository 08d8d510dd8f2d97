"""A secret planted in every field of hostile (and valid) input never comes back out.

Each test plants unique markers, `S3cr3t-<run>-<tag><n>`, in every field of what it submits
through the HTTP door (the dev host) and the public queue: job and operation ids, correlation
ids, methods, urls, header names and values, body keys and values (`passwordProfile.password`
among them), `dependsOn`, `{{...}}` references, Graph `$batch` bodies, malformed JSON, base64
garbage, oversized and deeply nested documents, and operations Graph (the emulator) answers
with errors. It then searches everything the app let out:

- the dev host's log file (all of the app's log output, tracebacks included);
- every HTTP response, status line aside: each header and the whole body;
- every row of the results table and of the pacing table, every property.

The tag says what a marker was planted in, and so where it may legitimately appear:
identifiers of a job the app recorded (its jobId as PartitionKey, in `statusUrl`/`Location`
and in log lines naming the job; operation ids as RowKeys and in results; the correlationId
in `CorrelationId`), a valid operation's url as `Url`, and what Graph itself answered (Graph
echoes a created object, and names a resource it did not find). Passwords, header values,
request headers, and anything of a rejected input other than the identifiers a rejected
queue message is recorded under (README: "Rejected jobs are recorded under the message's
jobId") may appear nowhere: not in a rejection's reason, a problem document, a row or a log
line. A marker is also looked for case-insensitively and base64-encoded.

Not searched: the poison queue. It keeps every rejected message exactly as it arrived, by
design, so `python -m batching poison replay` can send it back once the cause is fixed.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from batching.intake import Rejection, parse_job
from batching.models import Job
from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import poll_job, put_message, rows, wait_until

# Where each kind of marker may appear. `*` matches anything; places are
# `log`, `header:<name>`, `body:<json path>` (operations qualified by their status),
# `row:job.<Property>` (the job's own row) and `row:op[<Status>].<Property>`.
_RECORDED_JOB_ID = ["row:*.PartitionKey", "body:jobId", "body:statusUrl", "header:location", "log"]
ALLOWED: Final[dict[str, list[str]]] = {
    # identifiers of work the app recorded
    "jobid": _RECORDED_JOB_ID,
    "cid": ["row:*.CorrelationId", "body:correlationId"],
    "opid": [
        "row:op[*].RowKey",
        "body:operations[*].id",
        # a reference names its operation in the url that holds it; a Skipped row names the
        # dependency that failed, an unresolved reference the operation it reads (README)
        "row:op[*].Url",
        "body:operations[*].url",
        "row:op[Skipped].ErrorMessage",
        "body:operations[Skipped].error.message",
        "row:op[Failed].ErrorMessage",
        "body:operations[Failed].error.message",
    ],
    # a valid operation's url, recorded for its maker; Graph names a resource it did not find
    # (in its error, recorded as the error and as the response body)
    "url": [
        "row:op[*].Url",
        "body:operations[*].url",
        "row:op[Failed].ErrorMessage",
        "body:operations[Failed].error.message",
        "row:op[Failed].ResponseBody",
        "body:operations[Failed].body.error.message",
    ],
    # the path of a `{{op.path}}` reference: in the url it is part of, and named when missing
    "ref": [
        "row:op[*].Url",
        "body:operations[*].url",
        "row:op[Failed].ErrorMessage",
        "body:operations[Failed].error.message",
    ],
    # body values of valid operations: only as Graph's own answer (a created object)
    "bv": ["row:op[Succeeded].ResponseBody", "body:operations[Succeeded].body*"],
    # never, anywhere
    "pw": [],  # passwords
    "hv": [],  # header values of operations
    "hn": [],  # header names of operations
    "rhdr": [],  # headers and query parameters of the HTTP request itself
    "rjobid": [],  # identifiers of input refused at the HTTP door (nothing is recorded)
    "rcid": [],
    "rid": [],
    "rurl": [],  # anything else of a rejected input
    "rmethod": [],
    "rbody": [],
    "rkey": [],
    "rdep": [],
    "rref": [],
    "rjunk": [],
}
# Identifiers of input refused at the HTTP door are never recorded: they may not appear either.
HTTP_REJECTED_TAGS: Final = {"jobid": "rjobid", "cid": "rcid", "opid": "rid"}


class Marks:
    """Unique markers whose tag says what kind of field each was planted in."""

    def __init__(self) -> None:
        self.prefix = f"S3cr3t-{uuid.uuid4().hex[:12]}"
        self._count = itertools.count(1)
        self._found = re.compile(re.escape(self.prefix.lower()) + r"(?:-([a-z]+)\d+)?")
        # the prefix base64-encoded at each of the three byte alignments, stable characters only
        self._encoded = []
        for pad in range(3):
            encoded = base64.b64encode(b"\x00" * pad + self.prefix.encode()).decode()
            start = (pad * 4 + 2) // 3 + 1
            self._encoded.append(encoded[start : len(encoded) - 4])

    def __call__(self, tag: str) -> str:
        assert tag in ALLOWED, tag
        return f"{self.prefix}-{tag}{next(self._count)}"

    def rejected_at_http(self, tag: str) -> str:
        return self(HTTP_REJECTED_TAGS.get(tag, tag))

    def find(self, text: str) -> Iterator[tuple[str, int]]:
        """(tag, position) of every marker in `text`; `?` when the tag cannot be read, `b64`
        when it is base64-encoded."""
        for match in self._found.finditer(text.lower()):
            yield match.group(1) or "?", match.start()
        for encoded in self._encoded:
            start = text.find(encoded)
            while start >= 0:
                yield "b64", start
                start = text.find(encoded, start + 1)


@dataclass(frozen=True)
class Finding:
    tag: str
    place: str
    context: str

    @property
    def allowed(self) -> bool:
        return any(_place_matches(pattern, self.place) for pattern in ALLOWED.get(self.tag, []))


def _place_matches(pattern: str, place: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), place) is not None


@dataclass
class Capture:
    """Everything the app let out during a test, searched at the end."""

    marks: Marks
    responses: list[httpx.Response] = field(default_factory=list)

    def request(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = client.request(method, url, **kwargs)
        self.responses.append(response)
        assert response.status_code < 500, f"{method} {url} -> {response.status_code}"
        return response

    def poll(self, client: httpx.Client, url: str, timeout: float = 90.0) -> httpx.Response:
        answers = poll_job(client, url, timeout=timeout)
        self.responses.extend(answers)
        assert all(answer.status_code < 500 for answer in answers)
        return answers[-1]

    def findings(self, devhost: DevHost, env: dict[str, str]) -> list[Finding]:
        found: list[Finding] = []
        for line in devhost.log().splitlines():
            found.extend(self._in(line, "log"))
        for response in self.responses:
            for name, value in response.headers.multi_items():
                found.extend(self._in(f"{name}: {value}", f"header:{name.lower()}"))
            try:
                document = response.json()
            except ValueError:
                found.extend(self._in(response.text, "body:raw"))
            else:
                for place, text in _json_places(document, "body:"):
                    found.extend(self._in(text, place))
        for table in (env["RESULTS_TABLE"], env["PACING_TABLE"]):
            for entity in _entities(env, table):
                kind = "job" if entity.get("RowKey") == "" else f"op[{entity.get('Status')}]"
                for name, value in entity.items():
                    found.extend(self._in(f"{name}={value}", f"row:{kind}.{name}"))
        return found

    def leaks(self, devhost: DevHost, env: dict[str, str]) -> list[Finding]:
        return [finding for finding in self.findings(devhost, env) if not finding.allowed]

    def _in(self, text: str, place: str) -> Iterator[Finding]:
        for tag, at in self.marks.find(text):
            yield Finding(tag, place, text[max(0, at - 80) : at + 80])


def _json_places(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(place, text) for every key and string in a JSON document; list positions are `[]`,
    except a result's operations, qualified by their status: `operations[Failed].url`."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if not path.endswith(":") else f"{path}{key}"
            yield child, str(key)
            yield from _json_places(item, child)
    elif isinstance(value, list):
        for item in value:
            qualifier = ""
            if path.endswith("operations") and isinstance(item, dict):
                qualifier = str(item.get("status", ""))
            yield from _json_places(item, f"{path}[{qualifier}]")
    elif value is not None:
        yield path, str(value)


def _entities(env: dict[str, str], table: str) -> list[dict[str, Any]]:
    with TableClient.from_connection_string(env["AzureWebJobsStorage"], table) as client:
        try:
            return [dict(entity) for entity in client.list_entities()]
        except ResourceNotFoundError:
            return []


def _report(leaks: list[Finding]) -> str:
    return "\n".join(f"{leak.tag} in {leak.place}: ...{leak.context}..." for leak in leaks[:40])


def _poison_count(env: dict[str, str]) -> int:
    name = f"{env['PROVISIONING_QUEUE']}-poison"
    with QueueClient.from_connection_string(env["AzureWebJobsStorage"], name) as queue:
        try:
            return queue.get_queue_properties().approximate_message_count or 0
        except ResourceNotFoundError:
            return 0


def _client(marks: Marks, devhost: DevHost) -> httpx.Client:
    """An HTTP client with the function key, whose own headers carry markers too (none may be
    echoed)."""
    planted = {"User-Agent": marks("rhdr"), "X-Planted": marks("rhdr"), "Cookie": marks("rhdr")}
    return httpx.Client(timeout=60, headers={**planted, **devhost.headers})


def _jobs_url(devhost: DevHost, marks: Marks) -> str:
    """A query parameter is never echoed (only `code`, the function key, is kept in Location on
    purpose: Power Automate polls without headers)."""
    return f"{devhost.base_url}/api/jobs?planted={marks('rhdr')}"


# --- what is planted -------------------------------------------------------------------------

Mark = Callable[[str], str]


def _password(mark: Mark) -> dict[str, Any]:
    return {"passwordProfile": {"password": mark("pw"), "forceChangePasswordNextSignIn": True}}


def _ref(op_id: str, path: str) -> str:
    return "{{" + op_id + "." + path + "}}"


def hostile_documents(mark: Mark) -> dict[str, str]:
    """Invalid submissions, markers in every field. Identifiers are tagged as such (a rejected
    queue message is recorded under them); everything else may never appear."""

    def op(**fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": mark("opid"),
            "method": "PATCH",
            "url": f"/users/{mark('rurl')}@contoso.com",
            "headers": {"If-Match": mark("hv"), "client-request-id": mark("hv")},
            "body": {"jobTitle": mark("rbody"), mark("rkey"): mark("rbody"), **_password(mark)},
        }
        base.update(fields)
        return base

    def doc(*operations: dict[str, Any], key: str = "operations", **top: Any) -> str:
        document = {"jobId": mark("jobid"), "correlationId": mark("cid"), key: list(operations), **top}
        return json.dumps(document)

    deep_body: Any = {"password": mark("pw")}
    for _ in range(40):
        deep_body = {mark("rkey"): deep_body}
    first, second = mark("opid"), mark("opid")
    twin = mark("opid")
    return {
        "unknown-method": doc(op(method=mark("rmethod"))),
        "absolute-url": doc(op(url=f"https://{mark('rurl')}.example/v1.0/users")),
        "protocol-relative-url": doc(op(url=f"//{mark('rurl')}.example/users")),
        "versioned-url": doc(op(url=f"/v1.0/users/{mark('rurl')}")),
        "dot-segments": doc(op(url=f"/users/%2e%2e/{mark('rurl')}")),
        "not-allow-listed": doc(op(method="DELETE", url=f"/applications/{mark('rurl')}")),
        "control-characters-in-url": doc(op(url=f"/users/{mark('rurl')}\r\nHost: {mark('rurl')}")),
        "header-names": doc(op(headers={f"X-{mark('hn')}": mark("hv"), f"{mark('hn')} ": mark("hv")})),
        "app-owned-header": doc(op(headers={"Authorization": f"Bearer {mark('hv')}"})),
        "header-with-crlf": doc(op(headers={"If-Match": f"{mark('hv')}\r\nAuthorization: {mark('hv')}"})),
        "header-not-text": doc(op(headers={"Prefer": [mark("hv")], "If-Match": {mark("hn"): mark("hv")}})),
        "body-nan": doc(op(body={**_password(mark), mark("rkey"): float("nan")})),
        "body-huge-integer": doc(op(body={**_password(mark), mark("rkey"): 2**70})),
        "body-lone-surrogate": doc(op(body={**_password(mark), "displayName": mark("rbody") + "\ud800"})),
        "body-key-lone-surrogate": doc(op(body={**_password(mark), mark("rkey") + "\udc00": 1})),
        "body-too-deep": doc(op(body=deep_body)),
        "evil-odata-id": doc(
            op(
                method="POST",
                url="/groups/g1/members/$ref",
                body={"@odata.id": f"https://{mark('rurl')}.example/v1.0/directoryObjects/{mark('rurl')}"},
            )
        ),
        "evil-odata-bind": doc(
            op(
                method="POST",
                url="/groups",
                body={
                    "displayName": mark("rbody"),
                    "members@odata.bind": [f"http://graph.microsoft.com/v1.0/users/{mark('rurl')}"],
                    **_password(mark),
                },
            )
        ),
        "unknown-dependency": doc(op(dependsOn=[mark("rdep"), mark("rdep")])),
        "unknown-references": doc(
            op(
                url=f"/users/{_ref(mark('rref'), 'id')}",
                headers={"If-Match": _ref(mark("rref"), mark("rref"))},
                body={"manager": _ref(mark("rref"), mark("rref")), **_password(mark)},
            )
        ),
        "self-reference": doc(op(id=twin, url=f"/users/{_ref(twin, mark('rref'))}")),
        "cycle": doc(op(id=first, dependsOn=second), op(id=second, url=f"/users/{_ref(first, 'id')}")),
        "duplicate-ids": doc(op(id=twin), op(id=twin.upper())),
        "invalid-ids": doc(
            op(id=mark("rid") + "/x"),
            op(id=mark("rid") * 12),  # over 255 characters
            op(id=[mark("rid")]),
            op(id=mark("opid") * 9),  # long, but an id: a rejected queue message is recorded under it
        ),
        "invalid-job-id": json.dumps(
            {"jobId": mark("rjobid") + "!", "correlationId": mark("rcid") + "\x00", "operations": [op()]}
        ),
        "long-correlation-id": doc(op(), correlationId=mark("rcid") * 12),
        "unknown-fields": json.dumps(
            {"jobId": mark("jobid"), "operations": [op(**{mark("rkey"): mark("rbody")})], mark("rkey"): 1}
        ),
        "types-flipped": json.dumps(
            {
                "jobId": [mark("rjobid")],
                "correlationId": {"x": mark("rcid")},
                "operations": {"a": mark("rjunk")},
            }
        ),
        "empty-operations": doc(),
        "many-problems": doc(*[op(method=mark("rmethod"), body=None, headers={}) for _ in range(110)]),
        "graph-batch-body": doc(op(headers={"Authorization": mark("hv")}), key="requests"),
        "graph-batch-numeric-ids": json.dumps(
            {"requests": [{"id": 1, "method": "GET", "url": f"/users/{mark('rurl')}", "dependsOn": "9"}]}
        ),
        "malformed-work-message": json.dumps(
            {
                "kind": "provisioning.work",
                "jobId": mark("rjobid") + "\n",
                "correlationId": mark("rcid") + "\ud800",
                "items": [
                    {
                        "operation": {
                            "id": mark("rid") + "/",
                            "method": mark("rmethod"),
                            "url": mark("rurl"),
                            "headers": {mark("hn"): mark("hv")},
                            "body": _password(mark),
                        },
                        "attempts": mark("rjunk"),
                    }
                ],
                mark("rkey"): 1,
            }
        ),
        "truncated-json": doc(op())[:-9],
        "unterminated-string": '{"operations": [{"id": "'
        + mark("rid")
        + '", "body": {"password": "'
        + mark("pw"),
        "deep-document": '{"jobId": "'
        + mark("jobid")
        + '", "operations": ['
        + "[" * 20_000
        + json.dumps(mark("rjunk"))
        + "]" * 20_000
        + "]}",
        "json-scalar": json.dumps(mark("rjunk")),
        "json-array": json.dumps([{"password": mark("pw")}]),
        "not-json": f"{mark('rjunk')} password={mark('pw')}",
    }


def valid_user_job(mark: Mark, seeded: str) -> dict[str, Any]:
    """A valid job whose operations Graph answers in every way: created, updated, read, not
    found, refused, skipped, and a reference that does not resolve."""
    create, title, read, reset, read_reset, missing, no_upn, after, bad_ref = (mark("opid") for _ in range(9))
    return {
        "jobId": mark("jobid"),
        "correlationId": mark("cid"),
        "operations": [
            {
                "id": create,
                "method": "POST",
                "url": "/users",
                "headers": {"client-request-id": mark("hv"), "Prefer": mark("hv")},
                "body": {
                    "userPrincipalName": f"{mark('bv')}@contoso.com",
                    "displayName": mark("bv"),
                    "accountEnabled": True,
                    "mailNickname": mark("bv"),
                    "usageLocation": "NL",
                    **_password(mark),
                },
            },
            {
                "id": title,
                "method": "PATCH",
                "url": f"/users/{_ref(create, 'id')}",
                "headers": {"If-Match": mark("hv")},
                "body": {"jobTitle": mark("bv")},
            },
            {
                "id": read,
                "method": "GET",
                "url": f"/users/{_ref(create, 'userPrincipalName')}?$select=id,displayName",
                "headers": {"ConsistencyLevel": mark("hv"), "Accept-Language": mark("hv")},
                "dependsOn": [title],
            },
            {"id": reset, "method": "PATCH", "url": f"/users/{seeded}", "body": _password(mark)},
            {"id": read_reset, "method": "GET", "url": f"/users/{seeded}", "dependsOn": reset},
            {
                "id": missing,
                "method": "PATCH",
                "url": f"/users/{mark('url')}@contoso.com",
                "headers": {"If-None-Match": mark("hv")},
                "body": {"jobTitle": mark("bv")},
            },
            {
                "id": no_upn,
                "method": "POST",
                "url": "/users",
                "body": {"displayName": mark("bv"), **_password(mark)},
            },
            {"id": after, "method": "PATCH", "url": f"/users/{_ref(no_upn, 'id')}", "body": _password(mark)},
            {"id": bad_ref, "method": "GET", "url": f"/users/{_ref(create, mark('ref'))}"},
        ],
    }


def valid_graph_batch(mark: Mark, member: str) -> dict[str, Any]:
    """A Graph `$batch` body as a flow builds it: a group, a lookup, a member `$ref` and a team
    Graph refuses (the group is not a Microsoft 365 group)."""
    group, lookup, add, team = (mark("opid") for _ in range(4))
    return {
        "jobId": mark("jobid"),
        "correlationId": mark("cid"),
        "requests": [
            {"id": 7, "method": "GET", "url": f"/users/{member}", "headers": {"Accept": "application/json"}},
            {
                "id": group,
                "method": "POST",
                "url": "/groups",
                "headers": {"Content-Type": "application/json", "Accept-Language": mark("hv")},
                "body": {
                    "displayName": mark("bv"),
                    "mailNickname": mark("bv"),
                    "mailEnabled": False,
                    "securityEnabled": True,
                },
            },
            {"id": lookup, "method": "GET", "url": f"/users/{member}", "dependsOn": "7"},
            {
                "id": add,
                "method": "POST",
                "url": f"/groups/{_ref(group, 'id')}/members/$ref",
                "body": {
                    "@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/" + _ref(lookup, "id")
                },
            },
            {"id": team, "method": "PUT", "url": f"/groups/{_ref(group, 'id')}/team", "body": {}},
        ],
    }


def _checked_valid(document: dict[str, Any]) -> str:
    text = json.dumps(document)
    assert isinstance(parse_job(text), Job), parse_job(text)
    return text


def _checked_invalid(documents: dict[str, str]) -> dict[str, str]:
    for name, text in documents.items():
        assert isinstance(parse_job(text), Rejection), name
    return documents


# --- the tests -------------------------------------------------------------------------------


def test_input_refused_at_the_http_door_is_echoed_nowhere(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    marks = Marks()
    capture = Capture(marks)
    bodies: dict[str, bytes] = {
        name: text.encode("utf-8", "surrogatepass")
        for name, text in _checked_invalid(hostile_documents(marks.rejected_at_http)).items()
    }
    too_many = [{"id": marks("rid"), "method": "GET", "url": "/users/a"} for _ in range(1001)]
    bodies["1001-operations"] = json.dumps({"jobId": marks("rjobid"), "operations": too_many}).encode()
    bodies["not-utf8"] = (
        b'{"jobId": "\xff' + marks("rjobid").encode() + b'", "password": "' + marks("pw").encode()
    )
    filler = (marks("rbody") + " ") * (4 * 1024 * 1024 // 20)
    bodies["over-4-mib"] = json.dumps({"password": marks("pw"), "operations": [], "x": filler}).encode()

    with _client(marks, devhost) as client:
        for name, body in bodies.items():
            response = capture.request(client, "POST", _jobs_url(devhost, marks), content=body)
            assert response.status_code in {400, 413}, (name, response.status_code)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert all(error["field"] for error in response.json()["errors"]), name
        unknown = capture.request(client, "GET", f"{devhost.base_url}/api/jobs/{marks('rjobid')}")
        assert unknown.status_code == 404
        invalid = capture.request(client, "GET", f"{devhost.base_url}/api/jobs/{marks('rjobid')}!x")
        assert invalid.status_code == 400

    leaks = capture.leaks(devhost, app_env)
    assert not leaks, _report(leaks)
    assert graph.emulator.batch_calls() == []
    assert "Traceback" not in devhost.log()


def test_a_rejected_queue_message_is_recorded_only_under_its_identifiers(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    marks = Marks()
    capture = Capture(marks)
    # each document twice, plain and base64, with markers (and so jobIds) of its own
    messages = [(text, False) for text in _checked_invalid(hostile_documents(marks)).values()]
    messages += [(text, True) for text in _checked_invalid(hostile_documents(marks)).values()]
    filler = (marks("rbody") + " ") * 2000  # a message close to the queue's 64 KiB limit
    large = json.dumps({"jobId": marks("jobid"), "operations": [{"id": marks("opid"), "x": filler}]})
    messages.append((large, False))
    junk = base64.b64encode(os.urandom(48) + marks("rjunk").encode() + b"\xff").decode()
    messages += [(junk, False), (f"{marks('rjunk')}==", False), (base64.b64encode(b"\xff").decode(), False)]
    for text, as_base64 in messages:
        put_message(app_env, text, as_base64=as_base64)

    wait_until(lambda: _poison_count(app_env) >= len(messages), timeout=90)

    def job_rows() -> list[dict[str, Any]]:
        return [e for e in _entities(app_env, app_env["RESULTS_TABLE"]) if e["RowKey"] == ""]

    wait_until(lambda: len(job_rows()) >= len(messages), timeout=30)

    with _client(marks, devhost) as client:
        for job_row in job_rows():
            assert job_row["Status"] == "Rejected"
            assert job_row["Reason"]
            answer = capture.request(client, "GET", f"{devhost.base_url}/api/jobs/{job_row['PartitionKey']}")
            assert answer.status_code == 200

    findings = capture.findings(devhost, app_env)
    leaks = [finding for finding in findings if not finding.allowed]
    assert not leaks, _report(leaks)
    # the search is not vacuous: rejected messages are recorded under their identifiers
    assert {"row:job.PartitionKey", "row:op[Rejected].RowKey", "row:job.CorrelationId"} <= {
        finding.place for finding in findings
    }
    assert graph.emulator.batch_calls() == []
    assert "Traceback" not in devhost.log()


def test_valid_jobs_through_both_doors_keep_passwords_and_header_values_out_of_everything(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    graph.emulator.tenant.seed_users(6)
    # Graph throttles one operation and is briefly unavailable for another.
    graph.emulator.configure(
        {
            "itemFaults": [
                {"status": 429, "urlContains": "user5@", "times": 1, "retryAfter": "0"},
                {"status": 503, "urlContains": "user6@", "times": 1},
            ]
        }
    )
    marks = Marks()
    capture = Capture(marks)
    http_job = valid_user_job(marks, "user1@contoso.com")
    http_batch = valid_graph_batch(marks, "user2@contoso.com")
    queue_job = valid_user_job(marks, "user3@contoso.com")
    queue_job["operations"] += [
        {
            "id": marks("opid"),
            "method": "PATCH",
            "url": f"/users/user{n}@contoso.com",
            "body": {"jobTitle": "x"},
        }
        for n in (5, 6)
    ]
    queue_batch = valid_graph_batch(marks, "user4@contoso.com")
    # the same user again: Graph says it exists, and the app fetches it ("already existed")
    again = valid_user_job(marks, "user4@contoso.com")
    again["operations"][0]["body"]["userPrincipalName"] = http_job["operations"][0]["body"][
        "userPrincipalName"
    ]
    work_job, work_op = marks("jobid"), marks("opid")
    work = {  # on the app's own work queue, as if the app had written it
        "kind": "provisioning.work",
        "jobId": work_job,
        "ticket": "3" * 32,
        "correlationId": marks("cid"),
        "items": [
            {
                "operation": {
                    "id": work_op,
                    "method": "PATCH",
                    "url": "/users/user4@contoso.com",
                    "headers": {"Content-Type": "application/json", "If-Match": marks("hv")},
                    "body": {"jobTitle": marks("bv"), **_password(marks)},
                }
            }
        ],
    }

    with _client(marks, devhost) as client:
        accepted = [
            capture.request(client, "POST", _jobs_url(devhost, marks), content=_checked_valid(document))
            for document in (http_job, http_batch)
        ]
        assert [answer.status_code for answer in accepted] == [202, 202]
        put_message(app_env, _checked_valid(queue_job), as_base64=False)
        put_message(app_env, _checked_valid(queue_batch), as_base64=True)
        put_message(app_env, json.dumps(work), as_base64=False, queue_setting="WORK_QUEUE")
        for answer in accepted:
            assert capture.poll(client, answer.headers["Location"]).status_code == 200
        for document in (queue_job, queue_batch):
            url = f"{devhost.base_url}/api/jobs/{document['jobId']}"
            wait_until(lambda url=url: client.get(url).status_code != 404, timeout=30)
            assert capture.poll(client, url).status_code == 200
        followed = capture.request(client, "POST", _jobs_url(devhost, marks), content=_checked_valid(again))
        assert capture.poll(client, followed.headers["Location"]).status_code == 200
        # the same job again answers with its results; another body under its jobId is a 409
        same = capture.request(client, "POST", _jobs_url(devhost, marks), content=json.dumps(http_job))
        assert same.status_code == 200
        other = {**http_job, "operations": http_job["operations"][:1]}
        conflict = capture.request(client, "POST", _jobs_url(devhost, marks), content=json.dumps(other))
        assert conflict.status_code == 409
    wait_until(lambda: rows(app_env, work_job).get(work_op, {}).get("Status") == "Succeeded", timeout=30)

    findings = capture.findings(devhost, app_env)
    leaks = [finding for finding in findings if not finding.allowed]
    assert not leaks, _report(leaks)

    final = {op["id"]: op for op in accepted_result(capture, http_job["jobId"])["operations"]}
    statuses = [final[op["id"]]["status"] for op in http_job["operations"]]
    assert statuses == [
        "Succeeded",
        "Succeeded",
        "Succeeded",
        "Succeeded",
        "Succeeded",
        "Failed",  # Graph: not found
        "Failed",  # Graph: userPrincipalName is required
        "Skipped",
        "Failed",  # the reference does not resolve
    ]
    # every path was taken: Graph's 429 and 503, and the create of an existing user
    assert all(fault["times"] == 0 for fault in graph.emulator.config.item_faults)
    again_create = str(again["operations"][0]["id"])
    assert rows(app_env, str(again["jobId"]))[again_create]["Note"] == "already existed"
    # the passwords did reach Graph: the search above looked for something that was there
    sent = json.dumps([call["items"] for call in graph.emulator.batch_calls()])
    assert sum(tag == "pw" for tag, _ in marks.find(sent)) >= 4
    assert any(finding.tag == "bv" and finding.allowed for finding in findings)
    assert "Traceback" not in devhost.log()


def accepted_result(capture: Capture, job_id: str) -> dict[str, Any]:
    """The last 200 answer captured for `job_id`."""
    for response in reversed(capture.responses):
        if response.status_code == 200 and response.request.method == "GET":
            body = response.json()
            if body.get("jobId") == job_id:
                return dict(body)
    raise AssertionError(f"no final answer for {job_id}")


def test_a_queue_job_refused_for_a_taken_job_id_does_not_repeat_it_in_the_reason(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    graph.emulator.tenant.seed_users(2)
    marks = Marks()
    capture = Capture(marks)
    job_id = marks("jobid")
    for user in ("user1", "user2"):
        document = {
            "jobId": job_id,
            "operations": [{"id": "a", "method": "GET", "url": f"/users/{user}@contoso.com"}],
        }
        put_message(app_env, json.dumps(document), as_base64=False)
    wait_until(lambda: _poison_count(app_env) == 1, timeout=60)
    wait_until(lambda: len(_entities(app_env, app_env["RESULTS_TABLE"])) >= 4, timeout=30)

    findings = capture.findings(devhost, app_env)
    leaks = [finding for finding in findings if not finding.allowed]
    assert not leaks, _report(leaks)


def test_a_job_too_large_for_a_queue_message_is_refused_without_its_operation_ids(
    devhost: DevHost, app_env: dict[str, str]
) -> None:
    marks = Marks()
    capture = Capture(marks)
    first, second = marks("rid"), marks("rid")
    large = "x" * 30_000
    document = {
        "operations": [
            {"id": first, "method": "PATCH", "url": "/users/user1@contoso.com", "body": {"aboutMe": large}},
            {
                "id": second,
                "method": "PATCH",
                "url": "/users/user2@contoso.com",
                "body": {"aboutMe": large},
                "dependsOn": first,
            },
        ]
    }
    with _client(marks, devhost) as client:
        response = capture.request(
            client, "POST", _jobs_url(devhost, marks), content=_checked_valid(document)
        )
    assert response.status_code == 413

    leaks = capture.leaks(devhost, app_env)
    assert not leaks, _report(leaks)


def test_an_operation_refused_at_send_time_is_recorded_without_its_url(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    marks = Marks()
    capture = Capture(marks)
    job_id, op_id = marks("jobid"), marks("opid")
    forged = {
        "kind": "provisioning.work",
        "jobId": job_id,
        "ticket": "4" * 32,
        "items": [
            {
                "operation": {
                    "id": op_id,
                    "method": "DELETE",
                    "url": f"/directoryRoles/{marks('rurl')}",
                    "headers": {"Authorization": marks("hv")},
                    "body": _password(marks),
                }
            }
        ],
    }
    put_message(app_env, json.dumps(forged), as_base64=False, queue_setting="WORK_QUEUE")
    wait_until(lambda: rows(app_env, job_id).get(op_id, {}).get("Status") == "Failed", timeout=30)
    assert graph.emulator.batch_calls() == []

    leaks = capture.leaks(devhost, app_env)
    assert not leaks, _report(leaks)
