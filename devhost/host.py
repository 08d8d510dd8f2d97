"""Serve a FunctionApp's functions: HTTP routes, queue triggers and timer triggers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import importlib
import inspect
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue.aio import QueueClient
from croniter import croniter
from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devhost.config import QueueOptions, resolve
from devhost.keys import KEY_HEADER, KEY_QUERY, HostKeys, auth_level, presented_key

log = logging.getLogger("devhost")
LEASE_SECONDS = int(os.environ.get("DEVHOST_MESSAGE_LEASE_SECONDS", "30"))


@dataclass(frozen=True)
class FunctionEntry:
    name: str
    handler: Callable[..., Any]
    trigger: dict[str, Any]


def discover(module_name: str) -> list[FunctionEntry]:
    """Each function's trigger binding, exactly as the Functions host would read it."""
    return entries_of(importlib.import_module(module_name).app)


def entries_of(app: func.FunctionApp) -> list[FunctionEntry]:
    entries = []
    for function in app.get_functions():
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        name = str(function.get_function_name())
        entries.append(FunctionEntry(name, function.get_user_function(), trigger))
    return entries


async def invoke(entry: FunctionEntry, argument: Any) -> Any:
    kwargs = {entry.trigger["name"]: argument}
    if inspect.iscoroutinefunction(entry.handler):
        return await entry.handler(**kwargs)
    return await asyncio.to_thread(entry.handler, **kwargs)


def _route_regex(route: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)(?::\w+)?\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(route))
    return re.compile(f"^{pattern}\\Z")  # `$` would also match before a final line break


class _WholePath(PathConvertor):
    """Starlette's `path`, which stops at a line break (its `.*`), made to take the whole path:
    route parameters get what the caller sent, as in Azure (`/api/jobs/abc%0A` reaches the
    function as `abc` plus a line feed, and is refused there)."""

    regex = "(?s:.*)"


register_url_convertor("wholepath", _WholePath())


def http_app(entries: list[FunctionEntry], keys: HostKeys) -> Starlette:
    """HTTP functions under /api, each behind its own authLevel (see devhost.keys)."""
    routes = [
        (
            _route_regex(e.trigger.get("route") or e.name),
            {m.upper() for m in e.trigger.get("methods") or []},
            e,
            auth_level(e.trigger),
        )
        for e in entries
        if e.trigger["type"] == "httpTrigger"
    ]

    async def dispatch(request: Request) -> Response:
        path = request.path_params["path"]
        allowed = False
        for pattern, methods, entry, level in routes:
            match = pattern.match(path)
            if not match:
                continue
            allowed = True
            if methods and request.method not in methods:
                continue
            key = presented_key(request.headers.getlist(KEY_HEADER), request.query_params.getlist(KEY_QUERY))
            if not keys.allows(level, key):
                return Response(status_code=401)  # as Azure: empty body, the function never runs
            req = func.HttpRequest(
                request.method,
                str(request.url),
                headers=dict(request.headers),
                params=dict(request.query_params),
                route_params=match.groupdict(),
                body=await request.body(),
            )
            try:
                result: func.HttpResponse = await invoke(entry, req)
            except Exception:
                log.exception("function %s failed", entry.name)
                return Response(status_code=500)
            headers = {k: v for k, v in result.headers.items() if k.lower() != "content-type"}
            return Response(
                result.get_body(), status_code=result.status_code, headers=headers, media_type=result.mimetype
            )
        return Response(status_code=405 if allowed else 404)

    others = {e.name: e for e in entries if e.trigger["type"] != "httpTrigger"}
    running: set[asyncio.Task[None]] = set()

    async def run_now(request: Request) -> Response:
        """`POST /admin/functions/{name}`: run a non-HTTP function once now, as the host does
        (open locally; Azure asks for the master key)."""
        entry = others.get(request.path_params["name"])
        if entry is None:
            return Response(status_code=404)
        task = asyncio.create_task(_run_logged(entry, _manual_argument(entry)))
        running.add(task)
        task.add_done_callback(running.discard)
        return Response(status_code=202)

    return Starlette(
        routes=[
            Route("/api/{path:wholepath}", dispatch, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/admin/functions/{name}", run_now, methods=["POST"]),
        ]
    )


def _manual_argument(entry: FunctionEntry) -> Any:
    if entry.trigger["type"] == "timerTrigger":
        return TimerRequest(past_due=False)
    raise NotImplementedError(f"running a {entry.trigger['type']} function by hand")


async def _run_logged(entry: FunctionEntry, argument: Any) -> None:
    try:
        await invoke(entry, argument)
    except Exception:
        log.exception("function %s failed", entry.name)


class QueuePoller:
    """The queue trigger's contract: lease, invoke, delete; retry, then poison after maxDequeueCount."""

    def __init__(
        self, entry: FunctionEntry, options: QueueOptions, make_client: Callable[[str], QueueClient]
    ) -> None:
        self.entry = entry
        self.options = options
        self.queue_name = resolve(entry.trigger["queueName"])
        self._queue = make_client(self.queue_name)
        self._poison = make_client(f"{self.queue_name}-poison")
        self._capacity = options.batch_size + options.new_batch_threshold
        self._running = 0

    async def run(self) -> None:
        for client in (self._queue, self._poison):
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
        idle = 0.1
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                got = 0
                free = self._free_slots()
                if free == 0:  # like the host: fetch only when there is room to run them
                    await asyncio.sleep(0.05)
                    continue
                try:
                    async for message in self._queue.receive_messages(
                        messages_per_page=min(free, self.options.batch_size),
                        max_messages=min(free, self.options.batch_size),
                        visibility_timeout=LEASE_SECONDS,
                    ):
                        got += 1
                        self._running += 1
                        task = asyncio.create_task(self._handle(message))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                except Exception:  # storage hiccup: keep polling, like the Functions host
                    log.exception("polling %s failed", self.queue_name)
                idle = 0.1 if got else min(self.options.max_polling_interval, idle * 2)
                await asyncio.sleep(0 if got else idle)
        finally:
            for task in tasks:
                task.cancel()
            await self._queue.close()
            await self._poison.close()

    def _free_slots(self) -> int:
        return self._capacity - self._running

    async def _handle(self, message: Any) -> None:
        try:
            body = self._decode(message.content)
            if body is None:
                log.warning("message %s is not base64; moved to poison", message.id)
                await self._move_to_poison(message)
                return
            finished = asyncio.Event()
            lease = asyncio.create_task(self._keep_leased(message, finished))
            try:
                await invoke(
                    self.entry,
                    QueueMessage(  # type: ignore[no-untyped-call]
                        id=message.id,
                        body=body,
                        dequeue_count=message.dequeue_count,
                        pop_receipt=message.pop_receipt,
                        insertion_time=message.inserted_on,
                        expiration_time=message.expires_on,
                    ),
                )
            finally:
                # Not cancelled: a renewal in flight must land, or the pop receipt it brings
                # back is lost and the delete below fails (the message would run again).
                finished.set()
                await lease
            await self._queue.delete_message(message)
        except Exception:
            log.exception(
                "function %s failed on message %s (delivery %s)",
                self.entry.name,
                message.id,
                message.dequeue_count,
            )
            with contextlib.suppress(Exception):
                if message.dequeue_count >= self.options.max_dequeue_count:
                    await self._move_to_poison(message)
                else:
                    await self._queue.update_message(
                        message, visibility_timeout=int(self.options.visibility_timeout)
                    )
        finally:
            self._running -= 1

    async def _keep_leased(self, message: Any, finished: asyncio.Event) -> None:
        """Keep the message invisible while its function runs, as the host does; a renewal
        that fails is tried again at the next interval."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), LEASE_SECONDS / 3)
            if finished.is_set():
                return
            try:
                updated = await self._queue.update_message(message, visibility_timeout=LEASE_SECONDS)
            except AzureError:
                log.warning("renewing the lease on message %s failed; trying again", message.id)
                continue
            message.pop_receipt = updated.pop_receipt

    def _decode(self, content: str) -> bytes | None:
        if self.options.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            return None

    async def _move_to_poison(self, message: Any) -> None:
        await self._poison.send_message(message.content, time_to_live=-1)
        await self._queue.delete_message(message)


async def run_timer(entry: FunctionEntry) -> None:
    """Fire on the NCRONTAB schedule (six fields, seconds first), in UTC like Azure."""
    schedule = croniter(resolve(entry.trigger["schedule"]), datetime.now(UTC), second_at_beginning=True)
    while True:
        due: datetime = schedule.get_next(datetime)
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        await _run_logged(entry, TimerRequest(past_due=False))


def background_tasks(entries: list[FunctionEntry], options: QueueOptions) -> list[Callable[[], Any]]:
    connection = os.environ.get("AzureWebJobsStorage", "")

    def make_client(name: str) -> QueueClient:
        return QueueClient.from_connection_string(connection, name)

    starters: list[Callable[[], Any]] = []
    for entry in entries:
        if entry.trigger["type"] == "queueTrigger":
            poller = QueuePoller(entry, options, make_client)
            starters.append(poller.run)
        elif entry.trigger["type"] == "timerTrigger":
            starters.append(functools.partial(run_timer, entry))
    return starters


def build_host(module_name: str, options: QueueOptions, keys: HostKeys) -> Starlette:
    entries = discover(module_name)
    app = http_app(entries, keys)
    starters = background_tasks(entries, options)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(start()) for start in starters]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app.router.lifespan_context = lifespan
    for entry in entries:
        log.info("function %s: %s", entry.name, {k: v for k, v in entry.trigger.items() if k != "direction"})
    return app
