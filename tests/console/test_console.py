"""The console in a real browser (Debian's headless Chromium) against the real
release binary on a loopback port: a reviewer approves a flagged task that
arrived live; a dossier that changed under the reviewer is shown, not
silently refused; an observer sees operations but no decisions and no
payloads; a bad token gets the sign-in page with a clear message; a task's
event stream reconnects after the server restarts. Screenshots of each view
go to target/console-artifacts/."""

from __future__ import annotations

from typing import Any

import forgeline
from helpers import Server, wait_until

#: An AWS access key id from AWS's documentation: the secret scan flags it.
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def flagged_task(admin: forgeline.Client, alice: forgeline.Client, queue: str, result: Any) -> str:
    """Submits a task as alice and completes it with `result` as a worker:
    a result holding a secret goes to review. Returns the task id."""
    task = alice.submit({"goal": "rotate the deploy key"}, queue=queue)
    lease = admin.lease(queue, "w-console", max=1)[0]
    admin.complete(lease.lease_id, lease.token, result)
    return task.id


def live(browser: Any) -> None:
    browser.wait_text(".badge", "live")


def test_a_reviewer_approves_a_flagged_task_that_arrives_live(server: Server, admin: forgeline.Client, browser: Any) -> None:
    with forgeline.Client(server.url, server.token("alice", "submitter")) as alice:
        browser.sign_in(server.url, server.token("rita", "reviewer"))
        browser.wait_text("#principal", "rita")
        browser.wait_text("h1", "Review inbox")
        live(browser)
        browser.wait_text("#unassigned", "No unassigned reviews")
        browser.shot("inbox-empty")

        task_id = flagged_task(admin, alice, "cq", {"log": f"used {AWS_KEY}"})
        browser.wait_text("#unassigned [data-ticket]", "no-secrets-in-output")
        browser.wait_text("#unassigned [data-ticket]", "0 of 1")
        browser.shot("inbox-live-ticket")
        browser.click("#unassigned [data-ticket] a.button")

        browser.wait_text("h1", "Review")
        browser.wait_text("table", "no-secrets-in-output")
        browser.wait_text("pre", "rotate the deploy key")
        browser.click("#claim")
        browser.wait_text("#ticket-state", "claimed by rita")
        browser.wait_text("#timeline", "review_requested")
        browser.shot("ticket")
        browser.click("#outcome-approved")
        browser.click("#submit-decision")
        browser.wait_text("#review-notice", "Recorded: approved")
        browser.shot("ticket-approved")

        wait_until("the task to complete", lambda: admin.get_task(task_id).state == "completed")
        browser.open(f"{server.url}/#/queues")
        # One completion in the last five minutes: 0.2 per minute.
        browser.wait_text("[data-queue=cq]", "0.2")
        browser.shot("queues")
        assert browser.console_errors() == []
        assert browser.foreign_requests(server.url) == []


def test_a_dossier_that_changed_under_the_reviewer_is_shown_not_silently_refused(
    server: Server, admin: forgeline.Client, browser: Any
) -> None:
    with forgeline.Client(server.url, server.token("alice", "submitter")) as alice:
        task_id = flagged_task(admin, alice, "sq", {"key": AWS_KEY, "version": 1})
        first = next(t for t in admin.get_task(task_id).reviews if t.is_pending)
        browser.sign_in(server.url, server.token("rita", "reviewer"))
        browser.wait_text("h1", "Review inbox")
        browser.open(f"{server.url}/#/review/{first.id}")
        browser.wait_text("#result", '"version": 1')
        old_hash = browser.text("#dossier-hash")

        # Meanwhile another reviewer asks for changes and the task reruns
        # with a new result: a new review, a new dossier.
        admin.decide(first.id, "changes_requested", comment="bump the version")
        lease = admin.lease("sq", "w-console", max=1)[0]
        admin.complete(lease.lease_id, lease.token, {"key": AWS_KEY, "version": 2})

        browser.click("#outcome-approved")
        browser.click("#submit-decision")
        browser.wait_text("#review-notice", "changed")
        browser.wait_text("#result", '"version": 2')
        assert browser.text("#dossier-hash") != old_hash
        browser.shot("stale-dossier")
        assert admin.get_task(task_id).state == "awaiting_review", "nothing was decided on the old dossier"


def test_an_observer_sees_operations_but_no_decisions_and_no_payloads(
    server: Server, admin: forgeline.Client, browser: Any
) -> None:
    with forgeline.Client(server.url, server.token("alice", "submitter")) as alice:
        task_id = flagged_task(admin, alice, "oq", {"log": f"used {AWS_KEY}"})
        ticket = next(t for t in admin.get_task(task_id).reviews if t.is_pending)
        browser.sign_in(server.url, server.token("olga", "observer"))
        browser.wait_text("#principal", "olga")
        browser.wait_text("h1", "Tasks")
        nav = browser.text("#nav")
        assert "Tasks" in nav and "Review inbox" not in nav and "Dead letter" not in nav, nav
        browser.wait_text("#tasks", task_id)
        browser.shot("observer-tasks")
        browser.open(f"{server.url}/#/queues")
        browser.wait_text("[data-queue=oq]", "oq")
        row = browser.text("[data-queue=oq]")
        assert row.split()[:2] == ["oq", "0"], row  # nothing queued: it awaits review
        browser.shot("observer-queues")
        browser.open(f"{server.url}/#/task/{task_id}")
        browser.wait_text(".notice", "withheld")
        page = browser.text("main")
        assert "rotate the deploy key" not in page and AWS_KEY not in page, page
        assert not browser.d.find_elements("css selector", "#decision, #claim, #cancel")
        browser.shot("observer-task")
        assert browser.console_errors() == []

        browser.open(f"{server.url}/#/review/{ticket.id}")
        browser.wait_text(".error", "Not allowed")
        assert not browser.d.find_elements("css selector", "#decision")


def test_a_bad_token_gets_the_sign_in_page_with_a_clear_message(server: Server, browser: Any) -> None:
    browser.sign_in(server.url, "not-a-token")
    browser.wait_text(".error", "Your token was refused")
    assert browser.find("#token")
    browser.shot("signin-refused")


def test_a_task_stream_reconnects_after_the_server_restarts(server: Server, admin: forgeline.Client, browser: Any) -> None:
    task = admin.submit({"goal": "wait"}, queue="rq")
    browser.sign_in(server.url, server.admin_token())
    browser.wait_text("#principal", "admin")  # signed in: the console has left the sign-in page
    browser.open(f"{server.url}/#/task/{task.id}")
    browser.wait_text("#events", "task_queued")
    live(browser)

    port = int(server.url.rsplit(":", 1)[1])
    assert server.stop() == 0
    browser.wait_text(".badge", "reconnecting")
    browser.wait_text("#status", "reconnecting")
    browser.shot("task-reconnecting")
    server.start(port=port)
    live(browser)
    with forgeline.Client(server.url, server.admin_token()) as again:
        again.lease("rq", "w-console", max=1)
    browser.wait_text("#events", "task_leased")
    browser.wait_text("#task-state", "running")
    browser.shot("task-after-restart")
