"""The review gate through the SDK: claim and approve; changes requested;
a decision bound to a stale dossier is a typed conflict; a principal cannot
review its own task (four eyes). Tasks are submitted by ``sdk-submitter`` and
reviewed by ``admin``."""

from __future__ import annotations

from typing import Any

import pytest

import forgeline
from tests.sdk.helpers import wait_until


def _pending_ticket(client: forgeline.Client, task_id: str, not_id: str | None = None) -> forgeline.ReviewTicket:
    def check() -> forgeline.ReviewTicket | None:
        task = client.get_task(task_id, events=0)
        if task.state != "awaiting_review":
            return None
        return next((t for t in task.reviews if t.is_pending and t.id != not_id), None)

    return wait_until(f"a pending review ticket of task {task_id}", check)


def test_a_task_that_needs_review_completes_once_a_reviewer_claims_and_approves_it(
    client: forgeline.Client, submitter_client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any, wait_for_task: Any
) -> None:
    workers.start(forgeline.Worker(worker_client, queue, lambda ctx: {"pr": 17}, poll_wait_ms=500))
    task = submitter_client.submit({"goal": "refactor"}, queue=queue, review=True)

    ticket = _pending_ticket(client, task.id)
    assert ticket.state == "open" and ticket.task_id == task.id
    assert ticket.id in [t.id for t in client.iter_reviews(queue=queue)]

    claimed = client.claim_review(ticket.id)
    assert claimed.state == "claimed" and claimed.holder == "admin"
    assert [t.id for t in client.list_reviews(mine=True, queue=queue).items] == [ticket.id]

    full = client.get_review(ticket.id)
    assert full.current_dossier_hash == ticket.dossier_hash
    assert full.dossier is not None and full.dossier["task"]["result"] == {"pr": 17}

    decided = client.decide(ticket.id, "approve", comment="looks right")
    assert decided.state == "decided" and decided.outcome == "approved"
    assert decided.votes[-1]["by"] == "admin" and decided.votes[-1]["comment"] == "looks right"
    done = wait_for_task(task.id, "completed", events=20)
    assert done.result == {"pr": 17}
    assert done.events[-1].data["approved_by"] == ["admin"]


def test_a_decision_on_a_dossier_that_changed_since_it_was_read_is_a_stale_dossier_conflict(
    client: forgeline.Client, submitter_client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any, wait_for_task: Any
) -> None:
    def handle(ctx: forgeline.TaskContext) -> Any:
        feedback = ctx.review_feedback.comment if ctx.review_feedback else None
        return {"attempt": ctx.attempt, "feedback": feedback}

    workers.start(forgeline.Worker(worker_client, queue, handle, poll_wait_ms=500))
    task = submitter_client.submit({"goal": "report"}, queue=queue, review=True)

    first = _pending_ticket(client, task.id)
    seen_hash = client.get_review(first.id).current_dossier_hash
    assert seen_hash is not None
    client.decide(first.id, "changes_requested", comment="add totals")

    # The rerun produces a new result, so a new ticket with a new dossier.
    second = _pending_ticket(client, task.id, not_id=first.id)
    current = client.get_review(second.id).current_dossier_hash
    assert current is not None and current != seen_hash
    with pytest.raises(forgeline.StaleDossier) as caught:
        client.decide(second.id, "approved", dossier_hash=seen_hash)
    err = caught.value
    assert isinstance(err, forgeline.Conflict)
    assert err.status == 409 and err.code == "stale_dossier"
    assert err.current_hash == current and err.request_id
    assert client.get_review(second.id).state == "open"

    client.decide(second.id, "approved", dossier_hash=current)
    done = wait_for_task(task.id, "completed")
    assert done.result == {"attempt": 2, "feedback": "add totals"}


def test_review_conflicts_are_typed(
    client: forgeline.Client, submitter_client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any
) -> None:
    workers.start(forgeline.Worker(worker_client, queue, lambda ctx: "x", poll_wait_ms=500))
    task = submitter_client.submit(None, queue=queue, review=True)
    ticket = _pending_ticket(client, task.id)
    with pytest.raises(forgeline.NotHeld):
        client.release_review(ticket.id)
    assigned = client.assign_review(ticket.id, "bob")
    assert assigned.state == "assigned" and assigned.holder == "bob"
    released = client.release_review(ticket.id)  # review_admin may release bob's ticket
    assert released.state == "open" and released.holder is None
    client.decide(ticket.id, "rejected", comment="no")
    with pytest.raises(forgeline.TicketClosed) as caught:
        client.claim_review(ticket.id)
    assert caught.value.code == "ticket_closed"
    with pytest.raises(ValueError):
        client.decide(ticket.id, "maybe")


def test_a_principal_cannot_review_a_task_it_submitted(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any, wait_for_task: Any
) -> None:
    workers.start(forgeline.Worker(worker_client, queue, lambda ctx: "mine", poll_wait_ms=500))
    task = client.submit(None, queue=queue, review=True)  # admin submits…
    ticket = _pending_ticket(client, task.id)
    with pytest.raises(forgeline.Forbidden) as caught:
        client.claim_review(ticket.id)  # …so admin may not review it
    assert caught.value.status == 403 and "needs another principal" in str(caught.value)
    with pytest.raises(forgeline.Forbidden):
        client.decide(ticket.id, "approved")
    assert client.get_review(ticket.id).state == "open"
    client.assign_review(ticket.id, "bob")  # review_admin hands it to someone else
    assert client.get_review(ticket.id).holder == "bob"
