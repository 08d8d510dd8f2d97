"""The connector's convenience actions: typed inputs a maker fills in, each turned into a general
job, so the work still walks intake -> validate -> plan -> pace -> send -> record.

One pydantic model per action's input. Each checks what a maker types (naming the field, never
repeating its value) and builds the job's operations with ids the maker recognises:

- *Create users*: one `POST /users` per user, keyed by its userPrincipalName.
- *Update users*: one `PATCH /users/{user}` per user, keyed by the user as given (UPN or id).
  An empty value leaves a property as it is; `#clear` clears it (as in the bulk CSV files).
- *Add a user to groups*: `user` reads the user's id, then one `POST /groups/{id}/members/$ref`
  per group, keyed by the group's id. A user already in a group is "already existed".
- *Create a team with channels*: the documented two steps for a team with owners (Graph's
  "Creating a group with a team"): `owner-1`.. read each owner's id; `group` creates the
  Microsoft 365 group with the owners as owners and members, sent as Graph's upsert keyed by
  its mailNickname (`uniqueName`), so it is never made twice; `team` is `PUT
  /groups/{id}/team`, retried while Graph replicates the new group (404s for up to 15 minutes
  are documented); `member-1`.. read each further member's id and `membership-1`.. add them
  to the group; then `channel:{name}` per channel. Every step is safe to repeat, so a
  crash, a redelivery or the same flow run again never makes a second group, team or channel.

The final result is the job's (counts, one item per operation) plus, for a team, the ids a flow
needs next (`action_results`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from batching.allowlist import GRAPH_HOSTS, url_problem
from batching.errors import Problem, problems_from_validation
from batching.intake import load_document
from batching.models import CorrelationId, JobId
from batching.records import OperationRecord, OperationStatus

MAX_USERS_PER_CALL: Final = 500
MAX_UPDATES_PER_CALL: Final = 1000
MAX_GROUPS_PER_CALL: Final = 100
MAX_OWNERS: Final = 10  # owners and members bound at group creation: Graph takes at most 20
MAX_CHANNELS: Final = 50
MAX_MEMBERS: Final = 100
CLEAR: Final = "#clear"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UPN = re.compile(
    r"[^@\s]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_OBJECT_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# mailNickname: ASCII without @ ( ) \ [ ] " ; : < > , or spaces (Graph's rule), at most 64.
_NICKNAME = re.compile(r"[!#$%&'*+\-./0-9=?A-Z^_`a-z{|}~]{1,64}")
_NICKNAME_DROP = re.compile(r"[^A-Za-z0-9._-]")
# Characters Teams refuses in channel names.
_CHANNEL_FORBIDDEN = re.compile(r"[~#%&*{}+/\\:<>?|'\"]")
_USAGE_LOCATION = re.compile(r"[A-Za-z]{2}")


class ActionName(StrEnum):
    """The convenience actions, as recorded on their jobs and named in their routes."""

    CREATE_USERS = "createUsers"
    UPDATE_USERS = "updateUsers"
    ADD_USER_TO_GROUPS = "addUserToGroups"
    CREATE_TEAM = "createTeam"


# --- field types ------------------------------------------------------------------------------


def _clean(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("may not contain control characters")
    if not value.strip():
        raise ValueError("may not be empty")
    return value.strip()


def _upn(value: str) -> str:
    value = _clean(value)
    if not _UPN.fullmatch(value) or any(ch in value for ch in "/\\%?"):
        raise ValueError("must be a user principal name such as ada@contoso.com")
    return value


def _user_ref(value: str) -> str:
    value = _clean(value)
    if _OBJECT_ID.fullmatch(value):
        return value
    try:
        return _upn(value)
    except ValueError:
        raise ValueError("must be a user principal name (ada@contoso.com) or a user's object ID") from None


def _object_id(value: str) -> str:
    value = _clean(value)
    if not _OBJECT_ID.fullmatch(value):
        raise ValueError("must be an object ID (a GUID)")
    return value.lower()


def _nickname(value: str) -> str:
    value = _clean(value)
    if not _NICKNAME.fullmatch(value):
        raise ValueError('must be 1 to 64 ASCII characters without spaces or @ ( ) \\ [ ] " ; : < > ,')
    return value


def _channel_name(value: str) -> str:
    value = _clean(value)
    if _CHANNEL_FORBIDDEN.search(value) or value.startswith(("_", ".")) or value.endswith("."):
        raise ValueError(
            "may not contain ~ # % & * { } + / \\ : < > ? | ' \" or start with _ or . or end with ."
        )
    return value


def _usage_location(value: str) -> str:
    value = _clean(value)
    if not _USAGE_LOCATION.fullmatch(value):
        raise ValueError("must be a two-letter country code such as NL")
    return value.upper()


def _text(max_length: int) -> Any:
    return Field(max_length=max_length)


Text = Annotated[str, AfterValidator(_clean)]
UserPrincipalName = Annotated[str, Field(max_length=113), AfterValidator(_upn)]
UserRef = Annotated[str, Field(max_length=113), AfterValidator(_user_ref)]
ObjectId = Annotated[str, Field(max_length=36), AfterValidator(_object_id)]
MailNickname = Annotated[str, Field(max_length=64), AfterValidator(_nickname)]
ChannelName = Annotated[str, Field(max_length=50), AfterValidator(_channel_name)]
UsageLocation = Annotated[str, Field(max_length=2), AfterValidator(_usage_location)]


class _Input(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, str_strip_whitespace=False
    )


class _ActionInput(_Input):
    """What every action takes besides its own fields, as Run provisioning job does."""

    job_id: JobId | None = None
    correlation_id: CorrelationId | None = None
    # Checked where every job's is: against the callback hosts the HTTP door allows.
    callback_url: Annotated[str | None, Field(max_length=4096)] = None

    def operations(self, graph_root: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def job_document(self, graph_root: str) -> dict[str, Any]:
        """The general job this input stands for (the job contract, version 1)."""
        document: dict[str, Any] = {"operations": self.operations(graph_root)}
        if self.job_id is not None:
            document["jobId"] = self.job_id
        if self.correlation_id is not None:
            document["correlationId"] = self.correlation_id
        if self.callback_url is not None:
            document["callbackUrl"] = self.callback_url
        return document


def _unique(values: Sequence[str], what: str) -> None:
    """Refuse a key given twice (ignoring case, as Graph compares them), naming both places."""
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        earlier = seen.setdefault(value.casefold(), index)
        if earlier != index:
            raise ValueError(f"item {index} repeats {what} item {earlier}")


# --- Create users ----------------------------------------------------------------------------

# Optional user properties every user action takes, with their Graph names (camelCase aliases).
_PROFILE_FIELDS: Final = (
    "given_name",
    "surname",
    "job_title",
    "department",
    "office_location",
    "company_name",
    "employee_id",
    "mobile_phone",
    "city",
    "country",
    "usage_location",
)


class _Profile(_Input):
    given_name: Annotated[str | None, _text(64)] = None
    surname: Annotated[str | None, _text(64)] = None
    job_title: Annotated[str | None, _text(128)] = None
    department: Annotated[str | None, _text(64)] = None
    office_location: Annotated[str | None, _text(128)] = None
    company_name: Annotated[str | None, _text(64)] = None
    employee_id: Annotated[str | None, _text(16)] = None
    mobile_phone: Annotated[str | None, _text(64)] = None
    city: Annotated[str | None, _text(128)] = None
    country: Annotated[str | None, _text(128)] = None
    usage_location: Annotated[str | None, _text(6)] = None

    @model_validator(mode="after")
    def _no_control_characters(self) -> _Profile:
        for name in _PROFILE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str) and _CONTROL.search(value):
                raise ValueError(f"{to_camel(name)} may not contain control characters")
        if self.usage_location and self.usage_location != CLEAR:
            self.usage_location = _usage_location(self.usage_location)
        return self


class NewUser(_Profile):
    """One user to create."""

    user_principal_name: UserPrincipalName
    display_name: Annotated[Text, Field(max_length=256)]
    password: Annotated[str, Field(min_length=8, max_length=256)]
    mail_nickname: MailNickname | None = None
    account_enabled: bool = True
    force_change_password_next_sign_in: bool = True

    def body(self) -> dict[str, Any]:
        nickname = self.mail_nickname or _NICKNAME_DROP.sub("", self.user_principal_name.split("@")[0])[:64]
        body: dict[str, Any] = {
            "userPrincipalName": self.user_principal_name,
            "displayName": self.display_name,
            "mailNickname": nickname or "user",
            "accountEnabled": self.account_enabled,
            "passwordProfile": {
                "password": self.password,
                "forceChangePasswordNextSignIn": self.force_change_password_next_sign_in,
            },
        }
        for name in _PROFILE_FIELDS:
            value = getattr(self, name)
            if value:  # empty: not set
                body[to_camel(name)] = value
        return body


class CreateUsersInput(_ActionInput):
    """*Create users*: one `POST /users` per user, keyed by its userPrincipalName."""

    users: Annotated[list[NewUser], Field(min_length=1, max_length=MAX_USERS_PER_CALL)]

    @field_validator("users")
    @classmethod
    def _each_user_once(cls, users: list[NewUser]) -> list[NewUser]:
        _unique([u.user_principal_name for u in users], "the userPrincipalName of")
        return users

    def operations(self, graph_root: str) -> list[dict[str, Any]]:
        return [
            {
                "id": operation_key(user.user_principal_name),
                "method": "POST",
                "url": "/users",
                "body": user.body(),
            }
            for user in self.users
        ]


# --- Update users ----------------------------------------------------------------------------


class UserUpdate(_Profile):
    """One user's changes: empty leaves a property as it is, `#clear` clears it."""

    user: UserRef
    display_name: Annotated[str | None, _text(256)] = None
    account_enabled: bool | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for name in (*_PROFILE_FIELDS, "display_name"):
            value = getattr(self, name)
            if isinstance(value, str) and value.strip():
                body[to_camel(name)] = None if value.strip().lower() == CLEAR else value
        if self.account_enabled is not None:
            body["accountEnabled"] = self.account_enabled
        return body

    @model_validator(mode="after")
    def _changes_something(self) -> UserUpdate:
        if not self.body():
            raise ValueError("sets no property to change")
        if self.display_name is not None and self.display_name.strip().lower() == CLEAR:
            raise ValueError("displayName cannot be cleared")
        return self


class UpdateUsersInput(_ActionInput):
    """*Update users*: one `PATCH /users/{user}` per user, keyed by the user as given."""

    users: Annotated[list[UserUpdate], Field(min_length=1, max_length=MAX_UPDATES_PER_CALL)]

    @field_validator("users")
    @classmethod
    def _each_user_once(cls, users: list[UserUpdate]) -> list[UserUpdate]:
        _unique([u.user for u in users], "the user of")
        return users

    def operations(self, graph_root: str) -> list[dict[str, Any]]:
        return [
            {
                "id": operation_key(u.user),
                "method": "PATCH",
                "url": f"/users/{_segment(u.user)}",
                "body": u.body(),
            }
            for u in self.users
        ]


# --- Add a user to groups --------------------------------------------------------------------


class AddUserToGroupsInput(_ActionInput):
    """*Add a user to groups*: the user's id is read once (`user`), then one member reference
    per group, keyed by the group's id."""

    user: UserRef
    groups: Annotated[list[ObjectId], Field(min_length=1, max_length=MAX_GROUPS_PER_CALL)]

    @field_validator("groups")
    @classmethod
    def _each_group_once(cls, groups: list[str]) -> list[str]:
        _unique(groups, "the group of")
        return groups

    def operations(self, graph_root: str) -> list[dict[str, Any]]:
        lookup = {
            "id": "user",
            "method": "GET",
            "url": f"/users/{_segment(self.user)}?$select=id,userPrincipalName",
        }
        member = f"{graph_root}/directoryObjects/{{{{user.id}}}}"
        return [
            lookup,
            *(
                {
                    "id": group,
                    "method": "POST",
                    "url": f"/groups/{group}/members/$ref",
                    "body": {"@odata.id": member},
                }
                for group in self.groups
            ),
        ]


# --- Create a team with channels -------------------------------------------------------------


class NewChannel(_Input):
    """A standard channel of the new team."""

    display_name: ChannelName
    description: Annotated[str | None, _text(1024)] = None


class CreateTeamInput(_ActionInput):
    """*Create a team with channels*: group (with owners), team, channels, in that order."""

    display_name: Annotated[Text, Field(max_length=256)]
    mail_nickname: MailNickname | None = None
    description: Annotated[str | None, _text(1024)] = None
    visibility: Literal["Private", "Public"] = "Private"
    owners: Annotated[list[UserRef], Field(min_length=1, max_length=MAX_OWNERS)]
    members: Annotated[list[UserRef], Field(max_length=MAX_MEMBERS)] = Field(default_factory=list)
    channels: Annotated[list[NewChannel], Field(max_length=MAX_CHANNELS)] = Field(default_factory=list)

    @field_validator("owners")
    @classmethod
    def _each_owner_once(cls, owners: list[str]) -> list[str]:
        _unique(owners, "the owner of")
        return owners

    @field_validator("members")
    @classmethod
    def _each_member_once(cls, members: list[str]) -> list[str]:
        _unique(members, "the member of")
        return members

    @field_validator("channels")
    @classmethod
    def _each_channel_once(cls, channels: list[NewChannel]) -> list[NewChannel]:
        _unique([c.display_name for c in channels], "the name (names are unique in a team, ignoring case) of")
        return channels

    @field_validator("description")
    @classmethod
    def _plain_description(cls, description: str | None) -> str | None:
        if description is not None and _CONTROL.search(description.replace("\n", "").replace("\r", "")):
            raise ValueError("may not contain control characters other than line breaks")
        return description

    @model_validator(mode="after")
    def _nickname_known(self) -> CreateTeamInput:
        if self.mail_nickname is None and not _NICKNAME_DROP.sub("", self.display_name):
            raise ValueError("mailNickname is needed: displayName has no letters or digits to make one of")
        return self

    @property
    def nickname(self) -> str:
        return self.mail_nickname or _NICKNAME_DROP.sub("", self.display_name)[:64]

    def operations(self, graph_root: str) -> list[dict[str, Any]]:
        owners = [
            {
                "id": f"owner-{n}",
                "method": "GET",
                "url": f"/users/{_segment(owner)}?$select=id,userPrincipalName",
            }
            for n, owner in enumerate(self.owners, start=1)
        ]
        bound = [f"{graph_root}/users/{{{{owner-{n}.id}}}}" for n in range(1, len(self.owners) + 1)]
        group: dict[str, Any] = {
            "displayName": self.display_name,
            "mailNickname": self.nickname,
            # The alternate key that makes the create an upsert: never a second group.
            "uniqueName": self.nickname,
            "groupTypes": ["Unified"],
            "mailEnabled": True,
            "securityEnabled": False,
            "visibility": self.visibility,
            "owners@odata.bind": bound,
            "members@odata.bind": bound,
        }
        if self.description:
            group["description"] = self.description
        members = [
            {
                "id": f"member-{n}",
                "method": "GET",
                "url": f"/users/{_segment(member)}?$select=id,userPrincipalName",
            }
            for n, member in enumerate(self.members, start=1)
        ]
        # Members join the group (Teams takes the group's members): one reference each, so an
        # unknown member fails alone, and one already in the group is "already existed".
        memberships = [
            {
                "id": f"membership-{n}",
                "method": "POST",
                "url": "/groups/{{group.id}}/members/$ref",
                "body": {"@odata.id": f"{graph_root}/directoryObjects/{{{{member-{n}.id}}}}"},
            }
            for n in range(1, len(self.members) + 1)
        ]
        channels = [
            {
                "id": f"channel:{channel.display_name}",
                "method": "POST",
                "url": "/teams/{{team.id}}/channels",
                "body": {
                    "displayName": channel.display_name,
                    "membershipType": "standard",
                    **({"description": channel.description} if channel.description else {}),
                },
            }
            for channel in self.channels
        ]
        return [
            *owners,
            *members,
            {"id": "group", "method": "POST", "url": "/groups", "body": group},
            {"id": "team", "method": "PUT", "url": "/groups/{{group.id}}/team", "body": {}},
            *memberships,
            *channels,
        ]


# --- the door --------------------------------------------------------------------------------

# Each action's route under /api (function_app.py declares the same, the definition too).
ROUTES: Final[dict[ActionName, str]] = {
    ActionName.CREATE_USERS: "actions/create-users",
    ActionName.UPDATE_USERS: "actions/update-users",
    ActionName.ADD_USER_TO_GROUPS: "actions/add-user-to-groups",
    ActionName.CREATE_TEAM: "actions/create-team",
}

INPUTS: Final[dict[ActionName, type[_ActionInput]]] = {
    ActionName.CREATE_USERS: CreateUsersInput,
    ActionName.UPDATE_USERS: UpdateUsersInput,
    ActionName.ADD_USER_TO_GROUPS: AddUserToGroupsInput,
    ActionName.CREATE_TEAM: CreateTeamInput,
}


def graph_root(graph_base_url: str) -> str:
    """Where object URLs (`@odata.id`, `@odata.bind`) point: the configured cloud's Graph root,
    or the global one when the app talks to a stand-in (it reads only the id)."""
    parts = urlsplit(graph_base_url)
    host = (parts.hostname or "").lower()
    version = parts.path.strip("/") or "v1.0"
    return f"https://{host}/{version}" if host in GRAPH_HOSTS else "https://graph.microsoft.com/v1.0"


def build_job(action: ActionName, raw: bytes, graph_base_url: str) -> dict[str, Any] | list[Problem]:
    """An action's input (JSON bytes) as a general job document, or every problem with it,
    each naming the action's own field and never its value."""
    document, problems = load_document(raw)
    if problems:
        return problems
    if not isinstance(document, dict):
        return [Problem("body", "must be a JSON object")]
    try:
        action_input = INPUTS[action].model_validate(document)
    except ValidationError as error:
        return problems_from_validation(error)
    job = action_input.job_document(graph_root(graph_base_url))
    bad_urls = [
        Problem(f"operations[{index}]", "cannot be sent as a Graph URL")
        for index, op in enumerate(job["operations"])
        if url_problem(op["url"]) is not None
    ]
    return bad_urls or job


def operation_key(key: str) -> str:
    """A maker's key (a UPN, a group id) as an operation id: as it is, but for the characters a
    results row key may not hold (`/ \\ # ?`), and `%`, written as `%XX`."""
    return re.sub(r"[%/\\#?]", lambda m: f"%{ord(m.group(0)):02X}", key)


def _segment(value: str) -> str:
    """A user (UPN or id) as one URL path segment."""
    return quote(value, safe="@!$&'()*+,;=:")


# --- results ---------------------------------------------------------------------------------


def _team_results(operations: Sequence[OperationRecord]) -> dict[str, Any]:
    """The ids a flow needs after *Create a team with channels*, null until they exist."""
    by_id = {record.op_id: record for record in operations}

    def created(op_id: str, field: str) -> Any:
        record = by_id.get(op_id)
        if record is None or record.status is not OperationStatus.SUCCEEDED:
            return None
        body = record.response_body
        value = body.get(field) if isinstance(body, dict) else None
        return value if isinstance(value, str) else None

    return {
        "groupId": created("group", "id"),
        "teamId": created("team", "id"),
        "teamWebUrl": created("team", "webUrl"),
    }


_RESULTS: Final[dict[ActionName, Callable[[Sequence[OperationRecord]], dict[str, Any]]]] = {
    ActionName.CREATE_TEAM: _team_results,
}


def action_results(action: str | None, operations: Sequence[OperationRecord]) -> dict[str, Any]:
    """What a finished action job's result adds to the job's own (empty for most)."""
    try:
        name = ActionName(action) if action else None
    except ValueError:
        return {}
    render = _RESULTS.get(name) if name else None
    return render(operations) if render else {}
