"""Claims: one sender per operation, however many deliveries of its work are running.

Every message that carries work has a ticket: an app-written work message carries a fresh one
(`WorkMessage.ticket`), a producer's job is named by its queue message id (`job_ticket`). An
operation's row names the ticket that answers for it (`Ticket`) and, while a send is in
flight, when that ticket claimed it (`ClaimedAt`). Before an operation is sent, its row is
claimed with one conditional write (insert, or update on the ETag just read), so of two
deliveries only one sends. The rules (`judge`):

- a final row is never sent again;
- a row another ticket answers for is left to that ticket's message, which still exists: a
  ticket is written to a row only after its message is on the queue, and a message is
  deleted only after its operations are recorded or handed to a newer ticket;
- a row this ticket claimed before, with no outcome, means an earlier delivery of this same
  message stopped mid-send. If the claim is younger than the claim timeout, that delivery
  may still be running: the work is put back under the same ticket to look again later. If
  it is older, Graph may or may not have acted: the operation is sent again only when a
  repeat is harmless (`batching.idempotency`), otherwise it ends Failed, "outcome unknown".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Final

from batching.records import OperationStatus

JOB_TICKET_PREFIX: Final = "q-"
OUTCOME_UNKNOWN: Final = "outcomeUnknown"


def job_ticket(message_id: str) -> str:
    """The ticket of a producer's job message: its queue message id, stable across deliveries."""
    return f"{JOB_TICKET_PREFIX}{message_id}"


@dataclass(frozen=True, slots=True)
class RowState:
    """What a claim needs to know of an operation's row, as read (ETag None: no row yet)."""

    status: OperationStatus
    etag: str | None = None
    ticket: str = ""
    claimed_at: datetime | None = None


NO_ROW: Final = RowState(OperationStatus.PENDING)


class Claim(Enum):
    SEND = "send"  # claim it, then send it
    RESEND = "resend"  # an earlier delivery of this ticket stopped mid-send: Graph may have acted
    DEFER = "defer"  # an earlier delivery of this ticket claimed it moments ago; look again later
    NOT_OURS = "not ours"  # final, or another ticket answers for it


@dataclass(frozen=True, slots=True)
class Judgement:
    claim: Claim
    wait_seconds: float = 0.0  # for DEFER: until the earlier claim times out


def judge(state: RowState, ticket: str, now: datetime, timeout_seconds: float) -> Judgement:
    """What this delivery (holding `ticket`) may do with an operation whose row is `state`."""
    if state.status.is_final or (state.ticket and state.ticket != ticket):
        return Judgement(Claim.NOT_OURS)
    if state.claimed_at is None:
        return Judgement(Claim.SEND)
    age = (now - state.claimed_at).total_seconds()
    if age < timeout_seconds:
        return Judgement(Claim.DEFER, timeout_seconds - age)
    return Judgement(Claim.RESEND)
