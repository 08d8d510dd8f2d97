"""Callbacks without services: the allow-list, the URL rules, the Retry-After estimate, and the
sender against httpx transports (a resolver stands in for DNS)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from batching.connector.callback_urls import (
    DEFAULT_CALLBACK_HOSTS,
    AllowedHosts,
    callback_host,
    callback_url_problems,
)
from batching.connector.callbacks import CallbackSender, read_callback_message
from batching.connector.polling import retry_after_seconds
from batching.intake import Rejection, parse_job

SECRET = "S3cr3tSig"
FLOW = (
    "https://prod-12.westeurope.logic.azure.com:443/workflows/0a1b/runs/08585/actions/Wait/run"
    f"?api-version=2016-06-01&sp=%2Fruns%2F08585%2Factions%2FWait%2Frun&sv=1.0&sig={SECRET}"
)
DEFAULTS = AllowedHosts.parse("")
LOCAL = AllowedHosts.parse("default, 127.0.0.1")


# --- the allow-list ------------------------------------------------------------------------


def test_an_empty_setting_means_power_platforms_callback_hosts() -> None:
    assert AllowedHosts.parse("") == AllowedHosts.parse("default")
    assert DEFAULTS.suffixes == tuple(host[1:] for host in DEFAULT_CALLBACK_HOSTS)
    assert DEFAULTS.exact == frozenset()


def test_entries_extend_the_defaults_only_when_default_is_named() -> None:
    extended = AllowedHosts.parse("default,hooks.contoso.com")
    assert extended.allows("hooks.contoso.com")
    assert extended.allows("prod-01.westus.logic.azure.com")
    replaced = AllowedHosts.parse("hooks.contoso.com, *.flows.contoso.com")
    assert replaced.allows("hooks.contoso.com")
    assert replaced.allows("eu.flows.contoso.com")
    assert not replaced.allows("prod-01.westus.logic.azure.com")


@pytest.mark.parametrize("entry", ["*.com", "https://hooks.contoso.com", "hooks contoso", "*", "*.-x.com"])
def test_a_bad_allow_list_entry_is_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match="CALLBACK_ALLOWED_HOSTS"):
        AllowedHosts.parse(entry)


@pytest.mark.parametrize(
    "url",
    [
        FLOW,
        "https://prod-00.usgovvirginia.logic.azure.us/workflows/x/triggers/manual/paths/invoke?sig=abc",
        "https://prod-03.chinaeast2.logic.azure.cn/workflows/x?sig=abc",
        "https://default0a1b.02.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/x",
        "https://a.environment.api.gov.powerplatform.microsoft.us/powerautomate/x",
    ],
)
def test_power_automate_and_logic_apps_callback_urls_are_allowed_by_default(url: str) -> None:
    assert callback_url_problems(url, DEFAULTS) == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (FLOW.replace("https://", "http://"), "https"),
        ("https://logic.azure.com/workflows/x", "allow-list"),  # a pattern never matches its suffix
        ("https://prod-1.westus.logic.azure.com.evil.example/x", "allow-list"),
        ("https://evil.example/?next=prod-1.westus.logic.azure.com", "allow-list"),
        ("https://user:pw@prod-1.westus.logic.azure.com/x", "user name"),
        ("https://prod-1.westus.logic.azure.com/x#frag", "fragment"),
        ("ftp://prod-1.westus.logic.azure.com/x", "absolute https"),
        ("/relative/path", "absolute https"),
        ("https://prod-1.westus.logic.azure.com/a b", "spaces"),
        ("https://prod-1.westus.logic.azure.com\\@evil.example/", "backslashes"),
        ("https://10.0.0.1/workflows", "allow-list"),
        ("http://127.0.0.1:8080/hook", "allow-list"),  # loopback only when listed
        ("https://prod-1.westus.logic.azure.com/" + "x" * 5000, "4096"),
    ],
)
def test_other_callback_urls_are_refused_with_a_reason_that_never_repeats_them(url: str, why: str) -> None:
    problems = callback_url_problems(url, DEFAULTS)
    assert problems, url
    assert why in problems[0]
    assert "evil" not in problems[0]
    assert "workflows" not in problems[0]


def test_plain_http_reaches_only_a_loopback_address_listed_by_itself() -> None:
    assert callback_url_problems("http://127.0.0.1:8080/hook?sig=x", LOCAL) == []
    assert callback_url_problems("http://[::1]:8080/hook", AllowedHosts.parse("::1")) == []
    assert callback_url_problems("http://localhost:8080/hook", LOCAL) != []  # not listed
    assert (
        "https"
        in callback_url_problems("http://hooks.contoso.com/x", AllowedHosts.parse("hooks.contoso.com"))[0]
    )


def test_log_lines_name_the_callback_host_only() -> None:
    assert callback_host(FLOW) == "prod-12.westeurope.logic.azure.com"
    assert SECRET not in callback_host(FLOW)


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pending", "rate", "expected"),
    [(0, 19.5, 5), (20, 19.5, 5), (200, 19.5, 11), (1_000, 19.5, 52), (5_000, 19.5, 60), (45, 0, 5)],
)
def test_retry_after_is_the_time_the_work_left_takes_at_the_apps_pace_within_bounds(
    pending: int, rate: float, expected: int
) -> None:
    assert retry_after_seconds(pending, rate, lower=5, upper=60) == expected


# --- the job contract --------------------------------------------------------------------------

JOB = {"jobId": "cb-1", "operations": [{"id": "a", "method": "GET", "url": "/users"}]}


def test_a_job_keeps_its_callback_url_outside_its_identity() -> None:
    with_callback = parse_job(json.dumps({**JOB, "callbackUrl": FLOW}), callback_hosts=DEFAULTS)
    without = parse_job(json.dumps(JOB), callback_hosts=DEFAULTS)
    assert not isinstance(with_callback, Rejection)
    assert not isinstance(without, Rejection)
    assert with_callback.callback_url == FLOW
    assert with_callback.body_hash == without.body_hash  # a repeat may subscribe anew


def test_a_callback_url_off_the_list_is_a_problem_named_callback_url_beside_the_others() -> None:
    document = {**JOB, "callbackUrl": f"https://evil.example/{SECRET}", "operations": [{"id": "a"}]}
    rejected = parse_job(json.dumps(document), callback_hosts=DEFAULTS)
    assert isinstance(rejected, Rejection)
    fields = {problem.field for problem in rejected.problems}
    assert "callbackUrl" in fields
    assert {"operations[0].method", "operations[0].url"} <= fields
    assert SECRET not in json.dumps([str(problem) for problem in rejected.problems])


def test_the_queue_door_takes_no_callback_and_the_webhook_door_requires_one() -> None:
    on_queue = parse_job(json.dumps({**JOB, "callbackUrl": FLOW}))
    assert isinstance(on_queue, Rejection)
    assert [problem.field for problem in on_queue.problems] == ["callbackUrl"]
    missing = parse_job(
        json.dumps({**JOB, "jobId": "bad id!"}), callback_hosts=DEFAULTS, callback_required=True
    )
    assert isinstance(missing, Rejection)
    assert {problem.field for problem in missing.problems} == {"jobId", "callbackUrl"}


def test_only_callback_messages_are_read_as_such() -> None:
    assert read_callback_message("not json") is None
    assert read_callback_message(json.dumps({"kind": "provisioning.work"})) is None
    message = {
        "kind": "provisioning.callback",
        "jobId": "cb-1",
        "callbackId": "0" * 32,
        "url": FLOW,
        "statusUrl": "https://app/api/jobs/cb-1",
    }
    read = read_callback_message(json.dumps(message))
    assert read is not None
    assert read.url == FLOW


# --- the sender ------------------------------------------------------------------------------


class Resolver:
    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.addresses


class Receiver:
    """An httpx transport answering each POST with the next status (then 200)."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, headers=self.headers)


def sender(receiver: Receiver, resolver: Resolver, allowed: AllowedHosts = DEFAULTS) -> CallbackSender:
    return CallbackSender(allowed, transport=httpx.MockTransport(receiver), resolve=resolver)


DOCUMENT: dict[str, Any] = {"jobId": "cb-1", "status": "Succeeded", "operations": []}


async def test_the_post_goes_to_the_checked_address_with_the_hosts_name_and_no_credentials() -> None:
    receiver, resolver = Receiver(202), Resolver("20.50.2.10")
    outcome = await sender(receiver, resolver).post(FLOW, DOCUMENT)
    assert outcome.delivered
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.url.host == "20.50.2.10"
    assert request.url.port in {None, 443}  # https's own port
    assert request.url.params["sig"] == SECRET
    assert request.headers["host"].removesuffix(":443") == "prod-12.westeurope.logic.azure.com"
    assert request.extensions["sni_hostname"] == "prod-12.westeurope.logic.azure.com"
    assert "authorization" not in request.headers
    assert "x-functions-key" not in request.headers
    assert json.loads(request.content) == DOCUMENT
    assert resolver.asked == ["prod-12.westeurope.logic.azure.com"]


@pytest.mark.parametrize(
    "addresses",
    [
        ("10.1.2.3",),
        ("20.50.2.10", "192.168.1.1"),  # every address is checked, not only the first
        ("127.0.0.1",),
        ("169.254.169.254",),  # the instance metadata endpoint
        ("100.64.0.1",),
        ("::ffff:10.0.0.1",),
        ("fe80::1",),
        ("fd00::1",),
        ("224.0.0.1",),
    ],
)
async def test_a_name_that_resolves_to_an_inside_address_is_never_posted_to(
    addresses: tuple[str, ...],
) -> None:
    receiver = Receiver()
    outcome = await sender(receiver, Resolver(*addresses), LOCAL).post(FLOW, DOCUMENT)
    assert not outcome.delivered
    assert not outcome.retry
    assert "not public" in outcome.reason
    assert receiver.requests == []


async def test_a_listed_loopback_address_is_reached_over_plain_http() -> None:
    receiver, resolver = Receiver(200), Resolver()
    outcome = await sender(receiver, resolver, LOCAL).post("http://127.0.0.1:8099/hook?sig=x", DOCUMENT)
    assert outcome.delivered
    assert receiver.requests[0].url.host == "127.0.0.1"
    assert resolver.asked == []  # an address is not looked up


async def test_a_url_off_the_list_is_refused_at_sending_too() -> None:
    receiver = Receiver()
    outcome = await sender(receiver, Resolver("20.50.2.10")).post("https://evil.example/x", DOCUMENT)
    assert not outcome.delivered
    assert not outcome.retry
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (500, True),
        (503, True),
        (429, True),
        (408, True),
        (404, False),
        (400, False),
        (302, False),
        (301, False),
    ],
)
async def test_what_an_answer_means_for_trying_again(status: int, retry: bool) -> None:
    receiver = Receiver(status, headers={"Retry-After": "7", "Location": "https://elsewhere.example/"})
    outcome = await sender(receiver, Resolver("20.50.2.10")).post(FLOW, DOCUMENT)
    assert not outcome.delivered
    assert outcome.retry is retry
    assert str(status) in outcome.reason
    assert len(receiver.requests) == 1  # a redirect is not followed
    assert SECRET not in outcome.reason
    if retry:
        assert outcome.retry_after == "7"


async def test_no_answer_is_tried_again() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    callback_sender = CallbackSender(
        DEFAULTS, transport=httpx.MockTransport(refuse), resolve=Resolver("20.50.2.10")
    )
    outcome = await callback_sender.post(FLOW, DOCUMENT)
    assert not outcome.delivered
    assert outcome.retry
    assert SECRET not in outcome.reason
