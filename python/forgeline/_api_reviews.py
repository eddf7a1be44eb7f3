"""The review gate: tickets, claims, assignments, decisions, metrics."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ._api_base import APIBase, seg
from .errors import ForgelineError
from .models import Page, Paginator, ReviewTicket
from .stream import Seconds, duration_param

__all__ = ["OUTCOMES", "ReviewsAPI"]

#: The verdicts a review decision takes, and the aliases
#: :meth:`~forgeline.Client.decide` accepts for them.
OUTCOMES: Mapping[str, str] = {
    "approved": "approved",
    "approve": "approved",
    "rejected": "rejected",
    "reject": "rejected",
    "changes_requested": "changes_requested",
    "request_changes": "changes_requested",
}


class ReviewsAPI(APIBase):
    """The review routes of :class:`~forgeline.Client` (docs/api.md, "Reviews")."""

    def list_reviews(
        self,
        *,
        state: Optional[str] = None,
        queue: Optional[str] = None,
        reviewer: Optional[str] = None,
        mine: Optional[bool] = None,
        unassigned: Optional[bool] = None,
        min_age: Optional[Seconds] = None,
        cursor: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Page[ReviewTicket]:
        """One page of review tickets, **oldest first** (``GET /reviews``).
        Without ``state`` only pending tickets are listed."""
        params = {
            "state": state,
            "queue": queue,
            "reviewer": reviewer,
            "mine": mine,
            "unassigned": unassigned,
            "min_age": None if min_age is None else duration_param(min_age),
            "cursor": cursor,
            "limit": limit,
        }
        data = self._core.json("GET", "/api/v1/reviews", params=params, idempotent=True)
        return Page([ReviewTicket.from_json(r) for r in data.get("reviews", [])], data.get("next_cursor"))

    def iter_reviews(
        self,
        *,
        state: Optional[str] = None,
        queue: Optional[str] = None,
        reviewer: Optional[str] = None,
        mine: Optional[bool] = None,
        unassigned: Optional[bool] = None,
        min_age: Optional[Seconds] = None,
        cursor: Optional[str] = None,
        page_size: Optional[int] = None,
    ) -> Paginator[ReviewTicket]:
        """Every matching ticket, oldest first, page by page as it is iterated."""
        return Paginator(
            lambda c: self.list_reviews(
                state=state, queue=queue, reviewer=reviewer, mine=mine, unassigned=unassigned,
                min_age=min_age, cursor=c, limit=page_size,
            ),
            cursor,
        )

    def get_review(self, ticket_id: str) -> ReviewTicket:
        """One ticket with its task summary and dossier (``GET /reviews/{id}``).
        ``ticket.current_dossier_hash`` is what a decision must name."""
        data = self._core.json("GET", f"/api/v1/reviews/{seg(ticket_id)}", idempotent=True)
        return ReviewTicket.from_json(data)

    def claim_review(self, ticket_id: str) -> ReviewTicket:
        """Reserves a pending ticket for the caller for ``review.claim_ttl``;
        claiming again renews the claim.

        Raises:
            TicketHeld: another reviewer holds it.
            TicketClosed: it is no longer pending.
        """
        data = self._core.json("POST", f"/api/v1/reviews/{seg(ticket_id)}/claim", idempotent=True)
        return ReviewTicket.from_json(data)

    def release_review(self, ticket_id: str) -> ReviewTicket:
        """Gives a claimed or assigned ticket back (it becomes ``open``).

        Raises:
            NotHeld: it is not claimed or assigned.
            Forbidden: someone else holds it and the caller is not review_admin.
        """
        data = self._core.json("POST", f"/api/v1/reviews/{seg(ticket_id)}/release", idempotent=False)
        return ReviewTicket.from_json(data)

    def assign_review(self, ticket_id: str, reviewer: str) -> ReviewTicket:
        """Puts a pending ticket on ``reviewer`` (review_admin)."""
        data = self._core.json(
            "POST", f"/api/v1/reviews/{seg(ticket_id)}/assign", body={"reviewer": reviewer}, idempotent=False
        )
        return ReviewTicket.from_json(data)

    def decide(
        self,
        ticket_id: str,
        outcome: str,
        comment: Optional[str] = None,
        *,
        dossier_hash: Optional[str] = None,
    ) -> ReviewTicket:
        """Records the caller's verdict on a ticket (``POST /reviews/{id}/decision``).

        The verdict is bound to a dossier hash. Pass the ``dossier_hash``
        of the dossier the reviewer actually looked at
        (``get_review(id).current_dossier_hash``): if the dossier changed
        since, the server refuses with :class:`~forgeline.StaleDossier`.
        Without it, the current hash is read from ``GET /reviews/{id}`` just
        before deciding, which binds the verdict to the dossier as it is
        now (convenient for automated reviewers that judge it right then).

        Args:
            outcome: ``approved``, ``rejected`` or ``changes_requested``
                (``approve``, ``reject``, ``request_changes`` are accepted).
            comment: Required for ``changes_requested``.

        Raises:
            StaleDossier: the dossier changed; ``.current_hash`` is the new one.
            TicketClosed, TicketHeld, AlreadyDecided: see their docs.
        """
        verdict = OUTCOMES.get(outcome)
        if verdict is None:
            raise ValueError(f"outcome must be one of approved, rejected, changes_requested; got {outcome!r}")
        if dossier_hash is None:
            current = self.get_review(ticket_id).current_dossier_hash
            if current is None:
                raise ForgelineError(f"review {ticket_id} came without a dossier hash")
            dossier_hash = current
        body: dict[str, Any] = {"outcome": verdict, "dossier_hash": dossier_hash}
        if comment is not None:
            body["comment"] = comment
        data = self._core.json("POST", f"/api/v1/reviews/{seg(ticket_id)}/decision", body=body, idempotent=False)
        return ReviewTicket.from_json(data)

    def review_metrics(self, window: Optional[Seconds] = None) -> dict[str, Any]:
        """Reviewer metrics over the last ``window`` (``GET /reviews/metrics``,
        server default 24 h)."""
        params = {"window": None if window is None else duration_param(window)}
        data: dict[str, Any] = self._core.json("GET", "/api/v1/reviews/metrics", params=params, idempotent=True)
        return data
