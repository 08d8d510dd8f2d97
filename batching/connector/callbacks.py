"""Callbacks: a job's results POSTed once to the URL a flow gave, instead of being polled for.

Power Automate's webhook pattern: the flow subscribes with a callback URL (`listCallbackUrl()`,
or the connector's notification URL), waits without polling, and resumes when that URL gets a
POST. Here the POST carries the results document `GET /api/jobs/{id}` answers with 200.

Durable and single, whoever notices the job finished and whatever crashes:

- The URL is a secret (its `sig=` lets anyone resume the flow): it travels only in callback
  messages on the app's own callback queue (CALLBACK_QUEUE), never in a row, a log line or a
  response. The job's summary row keeps the callback's state: `CallbackId` (which
  subscription is current), `CallbackUrlHash` (a repeat subscription with the same URL is the
  same one), `CallbackState`, `CallbackAttempts`, `CallbackClaimedAt`, `CallbackNonce`,
  `CallbackError` (an HTTP status or a reason, never the URL).
- Arming enqueues the message first, then names its id on the row (conditionally on the row's
  ETag), so a row never names a callback whose message does not exist; a message whose id the
  row no longer names (superseded, or lost a race) drops itself.
- A message checks the job: while it runs, the message goes back on the queue, delayed by the
  time the work left takes (`polling.retry_after_seconds`, 2 to 15 s). Once the job is done,
  the delivery claims the callback with one conditional write (state `Sending`, a nonce, the
  time); of two deliveries only one wins, the other looks again when the claim would time
  out (CLAIM_TIMEOUT_SECONDS), so a delivery that died mid-send is taken over.
- A POST the receiver takes (2xx) is `Delivered`. No answer, 408, 425, 429 or 5xx is tried
  again, after the receiver's Retry-After or backoff (BACKOFF_BASE_SECONDS doubling), never
  more than BACKOFF_MAX_SECONDS, up to MAX_ATTEMPTS POSTs; then, or at once for any other answer (a
  redirect is never followed), the callback is `GaveUp`, with the reason.
- Unsubscribing (`cancel`) sets `Cancelled`: a pending callback is not sent.

The POST goes to the address the allow-list check resolved and approved
(`callback_urls`), with TLS checked against the host name, no credentials and no redirects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol

import httpx
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from batching.connector.callback_urls import (
    AllowedHosts,
    callback_host,
    callback_url_problems,
    is_public_address,
)
from batching.connector.polling import retry_after_seconds
from batching.records import utcnow
from batching.retry import RetryPolicy
from batching.store import ResultStore

if TYPE_CHECKING:
    from batching.service import JobView

log = logging.getLogger(__name__)

CALLBACK_KIND: Final = "provisioning.callback"
# How often a waiting callback looks at its job: the estimate of the work left, within these.
CHECK_MIN_SECONDS: Final = 2
CHECK_MAX_SECONDS: Final = 15
SEND_TIMEOUT_SECONDS: Final = 30.0
MAX_VISIBILITY_DELAY_SECONDS: Final = 7 * 24 * 3600
_RETRY_STATUSES: Final = frozenset({408, 425, 429})
_ROW_RACES: Final = 10
_USER_AGENT: Final = "graph-provisioning-callback/1"


class CallbackState(StrEnum):
    WAITING = "Waiting"  # for the job to finish, or for the next attempt
    SENDING = "Sending"  # claimed by a delivery that is POSTing now
    DELIVERED = "Delivered"
    GAVE_UP = "GaveUp"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        return self in {CallbackState.DELIVERED, CallbackState.GAVE_UP, CallbackState.CANCELLED}


class CallbackMessage(BaseModel):
    """What travels on the callback queue: the only place the URL is kept."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    kind: Literal["provisioning.callback"] = CALLBACK_KIND
    job_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    callback_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    url: Annotated[str, Field(max_length=4096)]
    status_url: Annotated[str, Field(max_length=4096)]


@dataclass(frozen=True, slots=True)
class CallbackRow:
    """The callback's state as the job's summary row holds it, with the row's ETag."""

    etag: str | None
    callback_id: str
    url_hash: str
    state: CallbackState | None
    attempts: int
    claimed_at: datetime | None
    nonce: str

    @classmethod
    def from_entity(cls, entity: dict[str, Any], etag: str | None) -> CallbackRow:
        state = str(entity.get("CallbackState") or "")
        claimed = entity.get("CallbackClaimedAt")
        return cls(
            etag=etag,
            callback_id=entity.get("CallbackId") or "",
            url_hash=entity.get("CallbackUrlHash") or "",
            state=CallbackState(state) if state in {s.value for s in CallbackState} else None,
            attempts=int(entity.get("CallbackAttempts") or 0),
            claimed_at=claimed if isinstance(claimed, datetime) else None,
            nonce=entity.get("CallbackNonce") or "",
        )


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one POST came to. `reason` names a status or a cause, never the URL."""

    delivered: bool
    retry: bool = False
    reason: str = ""
    retry_after: str | None = None


class CallbackRefused(Exception):
    """The callback may not be sent to where its URL points (now)."""


class Delivery(Protocol):
    """One callback to POST once: the row that holds its state, where it goes, and how its
    message comes back later. The webhook action's callback (the job's summary row) and the
    trigger's deliveries (`subscriptions`) are both sent by `CallbackDesk.deliver`."""

    @property
    def job_id(self) -> str: ...

    @property
    def callback_id(self) -> str: ...

    async def row(self) -> CallbackRow | None:
        """The callback's state, with the ETag it is changed under; None: gone."""
        ...

    async def merge(self, fields: dict[str, Any], etag: str | None) -> bool:
        """Merge `fields` if the row is still as read; False when it changed or is gone."""
        ...

    async def target(self) -> tuple[str, str] | None:
        """The URL to POST to and the status URL the document names; None: no longer wanted
        (unsubscribed). The URL is a secret: it goes to the sender only."""
        ...

    async def again(self, delay_seconds: float) -> None:
        """Put the delivery's message back on the queue, to be handled after the delay."""
        ...


@dataclass(frozen=True, slots=True)
class _ActionDelivery:
    """The webhook action's callback: state on the job's summary row, URL in the message."""

    store: ResultStore
    queue: CallbackQueue
    message: CallbackMessage

    @property
    def job_id(self) -> str:
        return self.message.job_id

    @property
    def callback_id(self) -> str:
        return self.message.callback_id

    async def row(self) -> CallbackRow | None:
        found = await self.store.summary_entity(self.message.job_id)
        if found is None:
            return None
        entity, etag = found
        return CallbackRow.from_entity(entity, etag)

    async def merge(self, fields: dict[str, Any], etag: str | None) -> bool:
        return await self.store.merge_summary(self.message.job_id, fields, etag)

    async def target(self) -> tuple[str, str] | None:
        return self.message.url, self.message.status_url

    async def again(self, delay_seconds: float) -> None:
        await self.queue.send(self.message, delay_seconds=delay_seconds)


# Host name and port -> the addresses it resolves to.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class CallbackSender:
    """POSTs a document to a callback URL that passes the allow-list, at an address checked at
    the moment of sending (the request goes to that address; TLS still checks the name).

    The transport is called directly, not through an httpx client: a client logs every
    request's URL, and this one is a secret."""

    def __init__(
        self,
        allowed: AllowedHosts,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Resolver = system_resolver,
        timeout_seconds: float = SEND_TIMEOUT_SECONDS,
    ) -> None:
        self._allowed = allowed
        self._transport = transport or httpx.AsyncHTTPTransport(retries=0)
        self._resolve = resolve
        self._timeout = httpx.Timeout(timeout_seconds)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def post(self, url: str, document: dict[str, Any]) -> DeliveryOutcome:
        try:
            request = await self._request(url, json.dumps(document).encode())
        except CallbackRefused as refused:
            return DeliveryOutcome(False, reason=str(refused))
        except OSError as error:  # the name does not resolve (now)
            return DeliveryOutcome(
                False, retry=True, reason=f"the host did not resolve ({type(error).__name__})"
            )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TransportError as error:
            return DeliveryOutcome(False, retry=True, reason=f"no answer ({type(error).__name__})")
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryOutcome(True, reason=str(status))
        if 300 <= status < 400:
            return DeliveryOutcome(False, reason=f"answered {status}; redirects are not followed")
        retry = status in _RETRY_STATUSES or status >= 500
        return DeliveryOutcome(
            False, retry=retry, reason=f"answered {status}", retry_after=response.headers.get("Retry-After")
        )

    async def _request(self, url: str, body: bytes) -> httpx.Request:
        """The POST, addressed to a checked address of the URL's host."""
        problems = callback_url_problems(url, self._allowed)
        if problems:
            raise CallbackRefused(f"the callback URL {problems[0]}")
        target = httpx.URL(url)
        host = target.host
        port = target.port or (443 if target.scheme == "https" else 80)
        loopback = self._allowed.allows_loopback(host)
        addresses = [host] if _is_address(host) else await self._resolve(host, port)
        if not addresses:
            raise OSError("no address")
        for address in addresses:
            if not (is_public_address(address) or (loopback and _is_loopback(address))):
                raise CallbackRefused("the callback host resolves to an address that is not public")
        extensions: dict[str, Any] = {"timeout": self._timeout.as_dict()}
        if target.scheme == "https" and not _is_address(host):
            extensions["sni_hostname"] = host
        return httpx.Request(
            "POST",
            target.copy_with(host=addresses[0].split("%", 1)[0]),
            headers={
                "Host": target.netloc.decode("ascii"),
                "Content-Type": "application/json",
                "User-Agent": _USER_AGENT,
            },
            content=body,
            extensions=extensions,
        )


class CallbackQueue:
    """The callback queue: plain JSON messages, each delayed until it should look again."""

    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    async def ensure(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self._queue.create_queue()

    async def close(self) -> None:
        await self._queue.close()

    async def send(self, message: BaseModel, *, delay_seconds: float = 0) -> None:
        delay = min(MAX_VISIBILITY_DELAY_SECONDS, max(0, int(delay_seconds + 0.999)))
        await self._queue.send_message(
            message.model_dump_json(by_alias=True), visibility_timeout=delay or None, time_to_live=-1
        )


def url_hash(url: str) -> str:
    """Names a callback URL without keeping it (a repeat subscription is recognised)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def read_callback_message(text: str) -> CallbackMessage | None:
    """A callback message, or None for anything else (never raises, never echoes the text)."""
    try:
        return CallbackMessage.model_validate_json(text.strip())
    except (ValidationError, ValueError):
        return None


class CallbackDesk:
    """Arms, cancels and delivers jobs' callbacks (see the module's docstring)."""

    def __init__(
        self,
        store: ResultStore,
        queue: CallbackQueue,
        sender: CallbackSender,
        job: Callable[[str], Awaitable[JobView | None]],
        document: Callable[[JobView, str], dict[str, Any]],
        policy: RetryPolicy,
        *,
        claim_timeout_seconds: float,
        writes_per_second: float,
    ) -> None:
        self._store = store
        self._queue = queue
        self._sender = sender
        self._job = job
        self._document = document  # the results document GET /api/jobs/{id} answers with
        self._policy = policy
        self._claim_timeout = claim_timeout_seconds
        self._writes_per_second = writes_per_second

    async def ensure(self) -> None:
        await self._queue.ensure()

    async def aclose(self) -> None:
        await self._sender.aclose()
        await self._queue.close()

    def check_delay(self, pending: int) -> int:
        """How long a message waiting for a job waits before it looks again."""
        return retry_after_seconds(
            pending, self._writes_per_second, lower=CHECK_MIN_SECONDS, upper=CHECK_MAX_SECONDS
        )

    async def arm(self, job_id: str, url: str, status_url: str, pending: int) -> None:
        """Make `url` the job's callback. The same URL again (a repeated subscription) keeps
        the callback it has; another URL replaces a callback not yet delivered, or adds one
        for a job that already sent its results elsewhere."""
        hashed = url_hash(url)
        for _ in range(_ROW_RACES):
            row = await self._row(job_id)
            if row is None:
                return
            if row.callback_id and row.url_hash == hashed and row.state is not CallbackState.CANCELLED:
                if row.state is not None and not row.state.is_final:  # its message may have
                    # been lost with a crashed subscription: another one costs only a check
                    await self._queue.send(
                        CallbackMessage(
                            job_id=job_id, callback_id=row.callback_id, url=url, status_url=status_url
                        ),
                        delay_seconds=self.check_delay(pending),
                    )
                return
            message = CallbackMessage(
                job_id=job_id, callback_id=uuid.uuid4().hex, url=url, status_url=status_url
            )
            await self._queue.send(message, delay_seconds=self.check_delay(pending))
            fields = {
                "CallbackId": message.callback_id,
                "CallbackUrlHash": hashed,
                "CallbackState": CallbackState.WAITING.value,
                "CallbackAttempts": 0,
                "CallbackClaimedAt": "",
                "CallbackNonce": "",
                "CallbackError": "",
            }
            if await self._store.merge_summary(job_id, fields, row.etag):
                return
        raise RuntimeError(f"job {job_id}: its row kept changing while its callback was set")

    async def cancel(self, job_id: str) -> bool:
        """Stop the job's callback unless it was delivered or given up; False: no such job."""
        for _ in range(_ROW_RACES):
            row = await self._row(job_id)
            if row is None:
                return False
            if row.state is None or row.state.is_final:
                return True
            fields = {"CallbackState": CallbackState.CANCELLED.value, "CallbackError": "unsubscribed"}
            if await self._store.merge_summary(job_id, fields, row.etag):
                log.info("job %s: callback cancelled", job_id)
                return True
        raise RuntimeError(f"job {job_id}: its row kept changing while its callback was cancelled")

    async def handle(self, text: str, dequeue_count: int, max_dequeue_count: int) -> None:
        """One callback message: look at the job, send when it is done, or wait some more."""
        message = read_callback_message(text)
        if message is None:
            log.warning("dropped a callback message that is not one")
            return
        await self.deliver(
            _ActionDelivery(self._store, self._queue, message), dequeue_count, max_dequeue_count
        )

    async def deliver(self, delivery: Delivery, dequeue_count: int, max_dequeue_count: int) -> None:
        """Send `delivery` once its job is done, or put it back to wait some more.

        Raises on storage errors (the host delivers the message again), except on its last
        delivery: then the callback is recorded as given up instead of being poisoned."""
        try:
            await self._deliver(delivery)
        except Exception as error:
            if dequeue_count < max_dequeue_count:
                raise
            log.exception("job %s: callback delivery kept failing; giving up", delivery.job_id)
            with contextlib.suppress(Exception):
                await self._settle(
                    delivery, None, CallbackState.GAVE_UP, None, f"delivery failed ({type(error).__name__})"
                )

    async def _deliver(self, delivery: Delivery) -> None:
        job_id = delivery.job_id
        for _ in range(_ROW_RACES):
            row = await delivery.row()
            if row is None or row.callback_id != delivery.callback_id or row.state is None:
                return  # no such job, or another subscription is current
            if row.state.is_final:
                return
            target = await delivery.target()
            if target is None:  # unsubscribed meanwhile: nothing is sent
                await self._settle(delivery, None, CallbackState.CANCELLED, None, "unsubscribed")
                return
            view = await self._job(job_id)
            if view is None:
                return
            if not view.summary.done:
                await delivery.again(self.check_delay(view.summary.pending))
                return
            now = utcnow()
            if row.state is CallbackState.SENDING and row.claimed_at is not None:
                age = (now - row.claimed_at).total_seconds()
                if age < self._claim_timeout:  # another delivery is sending: look again later
                    await delivery.again(self._claim_timeout - age + 1)
                    return
            nonce = uuid.uuid4().hex
            claim = {
                "CallbackState": CallbackState.SENDING.value,
                "CallbackClaimedAt": now,
                "CallbackNonce": nonce,
            }
            if await delivery.merge(claim, row.etag):
                break
        else:
            raise RuntimeError(f"job {job_id}: its row kept changing while its callback was claimed")

        url, status_url = target
        attempts = row.attempts + 1
        outcome = await self._sender.post(url, self._document(view, status_url))
        host = callback_host(url)
        if outcome.delivered:
            log.info("job %s: results delivered to %s (attempt %d)", job_id, host, attempts)
            await self._settle(delivery, nonce, CallbackState.DELIVERED, attempts, "")
        elif outcome.retry and not self._policy.exhausted(attempts):
            # The receiver's Retry-After, or backoff; never longer than the backoff ceiling.
            delay = min(self._policy.delay(attempts, outcome.retry_after), self._policy.cap_seconds)
            log.info("job %s: callback to %s %s; trying again in %.0f s", job_id, host, outcome.reason, delay)
            await delivery.again(delay)  # first: the claim still covers a crash
            await self._settle(delivery, nonce, CallbackState.WAITING, attempts, outcome.reason)
        else:
            log.warning(
                "job %s: callback to %s given up after %d attempts: %s",
                job_id,
                host,
                attempts,
                outcome.reason,
            )
            await self._settle(delivery, nonce, CallbackState.GAVE_UP, attempts, outcome.reason)

    async def _settle(
        self,
        delivery: Delivery,
        nonce: str | None,
        state: CallbackState,
        attempts: int | None,
        reason: str,
    ) -> None:
        """Record how a delivery ended, unless the callback moved on meanwhile: a waiting
        state only over this delivery's own claim (an unsubscribe stands), a final one over
        anything not final (a POST the receiver took was delivered, whatever happened)."""
        job_id = delivery.job_id
        for _ in range(_ROW_RACES):
            row = await delivery.row()
            if row is None or row.callback_id != delivery.callback_id:
                return
            if row.state is not None and row.state.is_final:
                return
            if state is CallbackState.WAITING and (
                row.state is not CallbackState.SENDING or row.nonce != nonce
            ):
                return
            fields: dict[str, Any] = {"CallbackState": state.value, "CallbackError": reason[:256]}
            fields["CallbackClaimedAt"] = ""
            if attempts is not None:
                fields["CallbackAttempts"] = attempts
            if await delivery.merge(fields, row.etag):
                return
        raise RuntimeError(f"job {job_id}: its row kept changing while its callback was recorded")

    async def _row(self, job_id: str) -> CallbackRow | None:
        found = await self._store.summary_entity(job_id)
        if found is None:
            return None
        entity, etag = found
        return CallbackRow.from_entity(entity, etag)


def _is_address(host: str) -> bool:
    try:
        is_public_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback


__all__ = [
    "CALLBACK_KIND",
    "CallbackDesk",
    "CallbackMessage",
    "CallbackQueue",
    "CallbackRefused",
    "CallbackRow",
    "CallbackSender",
    "CallbackState",
    "Delivery",
    "DeliveryOutcome",
    "read_callback_message",
    "url_hash",
]
