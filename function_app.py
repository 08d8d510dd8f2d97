"""Azure Functions entry point: trigger wiring only; all behaviour lives in `batching`.

Only `azure.functions` is imported here: the host indexes the functions from this module on
every cold start, and the library (pydantic, httpx, the storage SDKs) loads on the first
invocation instead, each door taking only what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from batching.service import ProvisioningService

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


async def _service() -> ProvisioningService:
    from batching.service import shared_service
    from batching.settings import get_settings

    return await shared_service(get_settings())


@app.route(route="jobs", methods=["POST"])
async def submit_job(req: func.HttpRequest) -> func.HttpResponse:
    from batching import http_api

    return await http_api.post_job(req, await _service())


@app.route(route="jobs/{jobId}", methods=["GET"])
async def job_status(req: func.HttpRequest) -> func.HttpResponse:
    from batching import http_api

    return await http_api.get_job(req, await _service())


async def _run_action(req: func.HttpRequest, action: str) -> func.HttpResponse:
    from batching import http_api
    from batching.connector.actions import ActionName

    return await http_api.post_action(req, await _service(), ActionName(action))


@app.route(route="actions/create-users", methods=["POST"])
async def create_users(req: func.HttpRequest) -> func.HttpResponse:
    return await _run_action(req, "createUsers")


@app.route(route="actions/update-users", methods=["POST"])
async def update_users(req: func.HttpRequest) -> func.HttpResponse:
    return await _run_action(req, "updateUsers")


@app.route(route="actions/add-user-to-groups", methods=["POST"])
async def add_user_to_groups(req: func.HttpRequest) -> func.HttpResponse:
    return await _run_action(req, "addUserToGroups")


@app.route(route="actions/create-team", methods=["POST"])
async def create_team_with_channels(req: func.HttpRequest) -> func.HttpResponse:
    return await _run_action(req, "createTeam")


@app.route(route="webhooks/jobs", methods=["POST"])
async def subscribe_job(req: func.HttpRequest) -> func.HttpResponse:
    from batching import http_api

    return await http_api.subscribe_job(req, await _service())


@app.route(route="webhooks/jobs/{jobId}", methods=["DELETE"])
async def unsubscribe_job(req: func.HttpRequest) -> func.HttpResponse:
    from batching import http_api

    return await http_api.unsubscribe_job(req, await _service())


@app.route(route="webhooks/subscriptions", methods=["POST"])
async def subscribe_trigger(req: func.HttpRequest) -> func.HttpResponse:
    from batching import http_api

    return await http_api.subscribe_trigger(req, await _service())


@app.route(route="webhooks/subscriptions/{subscriptionId}", methods=["DELETE"])
async def unsubscribe_trigger(req: func.HttpRequest) -> func.HttpResponse:
    from batching import http_api

    return await http_api.unsubscribe_trigger(req, await _service())


@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def api_definition(req: func.HttpRequest) -> func.HttpResponse:
    from batching.connector import definition

    return definition.definition_response(req)


@app.queue_trigger(arg_name="msg", queue_name="%PROVISIONING_QUEUE%", connection="AzureWebJobsStorage")
async def process_queue_message(msg: func.QueueMessage) -> None:
    service = await _service()
    await service.handle_queue_message(
        msg.get_body().decode("utf-8", errors="replace"),
        msg.id or "",
        msg.dequeue_count or 1,
        inserted_on=msg.insertion_time,
    )


@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
async def process_work_message(msg: func.QueueMessage) -> None:
    service = await _service()
    await service.handle_queue_message(
        msg.get_body().decode("utf-8", errors="replace"),
        msg.id or "",
        msg.dequeue_count or 1,
        source="work",
        inserted_on=msg.insertion_time,
    )


@app.queue_trigger(arg_name="msg", queue_name="%BULK_QUEUE%", connection="AzureWebJobsStorage")
async def process_bulk_message(msg: func.QueueMessage) -> None:
    service = await _service()
    await service.handle_queue_message(
        msg.get_body().decode("utf-8", errors="replace"),
        msg.id or "",
        msg.dequeue_count or 1,
        source="bulk",
        inserted_on=msg.insertion_time,
    )


@app.queue_trigger(arg_name="msg", queue_name="%CALLBACK_QUEUE%", connection="AzureWebJobsStorage")
async def deliver_callback(msg: func.QueueMessage) -> None:
    service = await _service()
    await service.handle_callback_message(
        msg.get_body().decode("utf-8", errors="replace"), msg.dequeue_count or 1
    )


@app.timer_trigger(schedule="%BULK_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def bulk_user_updates(timer: func.TimerRequest) -> None:
    service = await _service()
    await service.bulk.run_once()
