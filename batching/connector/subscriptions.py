"""The webhook trigger "When a provisioning job finishes": a flow subscribes with its callback
URL and optional filters, and each job that finishes while it is subscribed is POSTed to it once.

Power Automate subscribes when a flow with the trigger is saved or turned on, and calls the
subscription's Location (DELETE) when the flow is deleted or turned off.

- Storage: a subscription lives for months, so its callback URL (a secret: its `sig=` starts
  the flow) is kept in a table of its own (SUBSCRIPTIONS_TABLE) that only the app's identity
  may read; operators' roles cover the results and pacing tables only. The URL is never in a
  message, a log line, a results row or an answer. A subscription's id is a hash of its URL,
  so the same URL again (a flow saved again) is the same subscription, its filters the latest.
- Which jobs: every job the HTTP doors (jobs, typed actions, the webhook action), the
  provisioning queue or the bulk pickup (a CSV file's job; not a preview, which is no job)
  accept while at least one subscription exists gets one watch message on the callback queue.
  It waits for the job as the webhook action's callback does, then fans out one delivery
  message per subscription that matches and existed when the job was submitted; a job
  submitted before a subscription existed is not sent to it.
- Exactly once per (job, subscription): each delivery has a row in the subscriptions table
  (`delivery-{jobId}`, the subscription's id) holding the same state the action's callback
  keeps on the job's row, and is claimed, sent, retried and settled by the same code
  (`CallbackDesk.deliver`): same allow-list, public addresses, no redirects, retries. A
  delivery whose subscription is gone by then is cancelled, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from batching.connector.actions import ActionName
from batching.connector.callback_urls import AllowedHosts
from batching.connector.callbacks import CallbackDesk, CallbackQueue, CallbackRow, CallbackState
from batching.errors import Problem, problems_from_validation
from batching.intake import load_document
from batching.models import CallbackUrl
from batching.records import JobStatus, JobSummary, utcnow
from batching.storage import create_table_if_missing, merge_if_unchanged

if TYPE_CHECKING:
    from batching.service import JobView

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

WATCH_KIND: Final = "provisioning.jobWatch"
DELIVERY_KIND: Final = "provisioning.subscriptionDelivery"
SUBSCRIPTIONS_PARTITION: Final = "subscriptions"
SUBSCRIPTION_ID_PATTERN: Final = r"^[0-9a-f]{32}$"
_JOB_ID = r"^[A-Za-z0-9._-]{1,64}$"


class SubscriptionRequest(BaseModel):
    """The trigger's subscribe body: the flow's callback URL and the maker's filters."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    callback_url: Annotated[CallbackUrl, Field(repr=False)]  # a secret: never in a repr
    only_with_failures: bool = False
    correlation_id_prefix: Annotated[str, Field(max_length=256)] = ""
    action: ActionName | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A stored subscription. `url` is the secret callback URL: it goes only to the sender."""

    subscription_id: str
    url: str = field(repr=False)  # a secret: never in a repr
    base_url: str  # the app's own, as the subscriber reached it: results name their status URL
    only_with_failures: bool
    correlation_id_prefix: str
    action: str
    created_at: datetime

    def matches(self, summary: JobSummary) -> bool:
        """Whether a finished job goes to this subscription: its filters, and the job submitted
        after the subscription was made."""
        if summary.created_at is not None and summary.created_at < self.created_at:
            return False
        if self.only_with_failures and summary.status is JobStatus.SUCCEEDED:
            return False
        if not (summary.correlation_id or "").startswith(self.correlation_id_prefix):
            return False
        return not self.action or summary.action == self.action

    def describe(self) -> dict[str, Any]:
        """The subscription as answers show it: its id and filters, never its URL."""
        described: dict[str, Any] = {
            "subscriptionId": self.subscription_id,
            "onlyWithFailures": self.only_with_failures,
            "correlationIdPrefix": self.correlation_id_prefix,
        }
        if self.action:
            described["action"] = self.action
        return described

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> Subscription:
        return cls(
            subscription_id=str(entity["RowKey"]),
            url=str(entity["CallbackUrl"]),
            base_url=str(entity.get("BaseUrl") or ""),
            only_with_failures=bool(entity.get("OnlyWithFailures")),
            correlation_id_prefix=str(entity.get("CorrelationIdPrefix") or ""),
            action=str(entity.get("Action") or ""),
            created_at=entity["CreatedAt"],
        )


def subscription_id(url: str) -> str:
    """A subscription's id: the same callback URL is the same subscription. A hash, so the id
    (in the unsubscribe URL) does not reveal the URL."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


class WatchMessage(BaseModel):
    """Waits on the callback queue for a job to finish, then fans out its deliveries."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    kind: Literal["provisioning.jobWatch"] = WATCH_KIND
    job_id: Annotated[str, Field(pattern=_JOB_ID)]


class DeliveryMessage(BaseModel):
    """One finished job for one subscription; carries no URL (the subscription's row has it)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    kind: Literal["provisioning.subscriptionDelivery"] = DELIVERY_KIND
    job_id: Annotated[str, Field(pattern=_JOB_ID)]
    subscription_id: Annotated[str, Field(pattern=SUBSCRIPTION_ID_PATTERN)]


class SubscriptionStore:
    """The subscriptions table: subscriptions, and each (job, subscription) delivery's state."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def ensure_table(self) -> None:
        await create_table_if_missing(self._table)

    async def close(self) -> None:
        await self._table.close()

    async def put(self, request: SubscriptionRequest, base_url: str) -> Subscription:
        """Store a subscription; the same URL again keeps its creation time and takes the
        latest filters."""
        entity: dict[str, Any] = {
            "PartitionKey": SUBSCRIPTIONS_PARTITION,
            "RowKey": subscription_id(request.callback_url),
            "CallbackUrl": request.callback_url,
            "BaseUrl": base_url,
            "OnlyWithFailures": request.only_with_failures,
            "CorrelationIdPrefix": request.correlation_id_prefix,
            "Action": request.action.value if request.action else "",
        }
        try:
            await self._table.create_entity({**entity, "CreatedAt": utcnow()})
        except ResourceExistsError:
            await self._table.update_entity(entity, mode=UpdateMode.MERGE)
        found = await self.get(entity["RowKey"])
        if found is None:  # unsubscribed the moment it was made
            return Subscription.from_entity({**entity, "CreatedAt": utcnow()})
        return found

    async def get(self, sub_id: str) -> Subscription | None:
        try:
            entity = await self._table.get_entity(SUBSCRIPTIONS_PARTITION, sub_id)
        except ResourceNotFoundError:
            return None
        return Subscription.from_entity(dict(entity))

    async def delete(self, sub_id: str) -> bool:
        """False: no such subscription (the SDK's delete says nothing of a missing row)."""
        if await self.get(sub_id) is None:
            return False
        await self._table.delete_entity(SUBSCRIPTIONS_PARTITION, sub_id)
        return True

    async def any(self) -> bool:
        pages = self._table.query_entities(
            f"PartitionKey eq '{SUBSCRIPTIONS_PARTITION}'", select=["RowKey"], results_per_page=1
        )
        async for _ in pages:
            return True
        return False

    async def all(self) -> list[Subscription]:
        query = f"PartitionKey eq '{SUBSCRIPTIONS_PARTITION}'"
        return [Subscription.from_entity(dict(e)) async for e in self._table.query_entities(query)]

    async def delivery_row(self, job_id: str, sub_id: str) -> CallbackRow | None:
        """The delivery's state, its row made (Waiting) the first time it is asked for."""
        for _ in range(2):
            try:
                entity = await self._table.get_entity(f"delivery-{job_id}", sub_id)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):
                    await self._table.create_entity(
                        {
                            "PartitionKey": f"delivery-{job_id}",
                            "RowKey": sub_id,
                            "CallbackId": sub_id,
                            "CallbackState": CallbackState.WAITING.value,
                            "CallbackAttempts": 0,
                        }
                    )
                continue
            return CallbackRow.from_entity(dict(entity), entity.metadata.get("etag"))
        return None

    async def merge_delivery(
        self, job_id: str, sub_id: str, fields: dict[str, Any], etag: str | None
    ) -> bool:
        entity = {"PartitionKey": f"delivery-{job_id}", "RowKey": sub_id, **fields, "UpdatedAt": utcnow()}
        return await merge_if_unchanged(self._table, entity, etag)


@dataclass(frozen=True, slots=True)
class _SubscriptionDelivery:
    """One job for one subscription, as `CallbackDesk.deliver` sends it."""

    store: SubscriptionStore
    queue: CallbackQueue
    message: DeliveryMessage

    @property
    def job_id(self) -> str:
        return self.message.job_id

    @property
    def callback_id(self) -> str:
        return self.message.subscription_id

    async def row(self) -> CallbackRow | None:
        return await self.store.delivery_row(self.message.job_id, self.message.subscription_id)

    async def merge(self, fields: dict[str, Any], etag: str | None) -> bool:
        return await self.store.merge_delivery(
            self.message.job_id, self.message.subscription_id, fields, etag
        )

    async def target(self) -> tuple[str, str] | None:
        subscription = await self.store.get(self.message.subscription_id)
        if subscription is None:
            return None
        return subscription.url, f"{subscription.base_url}/api/jobs/{self.message.job_id}"

    async def again(self, delay_seconds: float) -> None:
        await self.queue.send(self.message, delay_seconds=delay_seconds)


class SubscriptionDesk:
    """Subscribes and unsubscribes the trigger, and delivers finished jobs to subscribers."""

    def __init__(
        self,
        store: SubscriptionStore,
        queue: CallbackQueue,
        callbacks: CallbackDesk,
        job: Callable[[str], Awaitable[JobView | None]],
        allowed: AllowedHosts,
    ) -> None:
        self._store = store
        self._queue = queue
        self._callbacks = callbacks
        self._job = job
        self._allowed = allowed

    async def ensure(self) -> None:
        # The operator CLI's people may not touch this table (README "Roles for people"): a
        # 403 on creating it is passed over; the app creates it on start and the Bicep in Azure.
        await self._store.ensure_table()

    async def aclose(self) -> None:
        await self._store.close()

    async def subscribe(self, body: bytes, base_url: str) -> Subscription | list[Problem]:
        """Validate and store a subscription; problems name fields, never echo values."""
        document, problems = load_document(body)
        if problems:
            return problems
        if not isinstance(document, dict):
            return [Problem("body", "must be a JSON object with callbackUrl")]
        try:
            request = SubscriptionRequest.model_validate(document, context={"callback_hosts": self._allowed})
        except ValidationError as error:
            return problems_from_validation(error)
        subscription = await self._store.put(request, base_url.rstrip("/"))
        log.info("trigger subscription %s made", subscription.subscription_id)
        return subscription

    async def unsubscribe(self, sub_id: str) -> bool:
        """False: no such subscription. Deliveries not yet sent are then cancelled."""
        deleted = await self._store.delete(sub_id)
        if deleted:
            log.info("trigger subscription %s removed", sub_id)
        return deleted

    async def watch(self, job_id: str, pending: int) -> None:
        """A job was accepted: when anyone is subscribed, its results will be offered to them
        once it is done. Called after the job is queued and before it is marked so, so a
        submission that failed between the two watches again when it is repeated."""
        if await self._store.any():
            await self._queue.send(
                WatchMessage(job_id=job_id), delay_seconds=self._callbacks.check_delay(pending)
            )

    async def handle(self, text: str, dequeue_count: int, max_dequeue_count: int) -> bool:
        """A trigger message of the callback queue; False when `text` is not one."""
        watch = _read(WatchMessage, text)
        if watch is not None:
            await self._fan_out(watch)
            return True
        delivery = _read(DeliveryMessage, text)
        if delivery is not None:
            await self._callbacks.deliver(
                _SubscriptionDelivery(self._store, self._queue, delivery), dequeue_count, max_dequeue_count
            )
            return True
        return False

    async def _fan_out(self, message: WatchMessage) -> None:
        """Wait for the job; once done, one delivery message per matching subscription. Done
        again after a crash, it sends copies the deliveries' rows tell apart."""
        view = await self._job(message.job_id)
        if view is None:
            return
        if not view.summary.done:
            await self._queue.send(message, delay_seconds=self._callbacks.check_delay(view.summary.pending))
            return
        matching = [s for s in await self._store.all() if s.matches(view.summary)]
        await asyncio.gather(
            *(
                self._queue.send(DeliveryMessage(job_id=message.job_id, subscription_id=s.subscription_id))
                for s in matching
            )
        )
        if matching:
            log.info("job %s: offered to %d trigger subscriptions", message.job_id, len(matching))


def _read(model: type[M], text: str) -> M | None:
    try:
        return model.model_validate_json(text.strip())
    except (ValidationError, ValueError):
        return None


__all__ = [
    "DELIVERY_KIND",
    "WATCH_KIND",
    "DeliveryMessage",
    "Subscription",
    "SubscriptionDesk",
    "SubscriptionRequest",
    "SubscriptionStore",
    "WatchMessage",
    "subscription_id",
]
