// The forgeline console: a plain ES module, no build step, no dependency.
// It talks only to this server's /api/v1 with the token the user pasted
// (kept in sessionStorage for the tab, never in a URL or localStorage) and
// follows the event streams over fetch (EventSource cannot send a token).

const TOKEN_KEY = "forgeline.token";
const state = { token: sessionStorage.getItem(TOKEN_KEY), me: null, view: null };

// ---- DOM ------------------------------------------------------------------

/** Builds an element: h("a", {href: "#/"}, "text", child…). No innerHTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const main = () => document.getElementById("main");
function show(...nodes) {
  main().replaceChildren(...nodes);
}
function status(text) {
  document.getElementById("status").textContent = text || "";
}
function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, describe(e));
}
function empty(text) {
  return h("p", { class: "empty" }, text);
}
function table(headers, rows, emptyText) {
  if (!rows.length) return empty(emptyText);
  return h("div", { class: "scroll" },
    h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)));
}
function json(v) {
  return h("pre", { class: "mono" }, v === null || v === undefined ? "null" : JSON.stringify(v, null, 2));
}
function ago(iso) {
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}
function left(iso) {
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const a = Math.abs(s);
  const txt = a < 60 ? `${a}s` : a < 3600 ? `${Math.floor(a / 60)}m ${a % 60}s` : `${Math.floor(a / 3600)}h ${Math.floor((a % 3600) / 60)}m`;
  return s >= 0 ? `${txt} left` : `overdue by ${txt}`;
}
/** A "time left" cell that counts down once a second (display only). */
function countdown(iso) {
  const el = h("span", { "data-due": iso }, left(iso));
  if (Date.parse(iso) < Date.now()) el.classList.add("overdue");
  return el;
}
setInterval(() => {
  for (const el of document.querySelectorAll("[data-due]")) {
    el.textContent = left(el.dataset.due);
    el.classList.toggle("overdue", Date.parse(el.dataset.due) < Date.now());
  }
}, 1000);

// ---- API ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "";
    this.details = err.details || {};
    this.requestId = err.request_id || "";
    this.retryAfter = retryAfter;
  }
}

function describe(e) {
  if (!(e instanceof ApiError)) return `Could not reach the server (${e.message}). Is it running?`;
  const id = e.requestId ? ` (request ${e.requestId})` : "";
  switch (e.status) {
    case 401: return `Your token was refused: it is missing, expired or not valid for this server. Sign in again.${id}`;
    case 403: return `Not allowed: ${e.message}${id}`;
    case 404: return `Not found: ${e.message}${id}`;
    case 409: return `Conflict: ${e.message}${id}`;
    case 429: return `Too many requests: try again in ${e.retryAfter || "a few"} seconds.${id}`;
    case 503: return `The server cannot store anything right now (${e.message}); try again shortly.${id}`;
    default: return `${e.message}${id}`;
  }
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const e = new ApiError(r.status, data, r.headers.get("Retry-After"));
    if (r.status === 401 && path !== "/api/v1/me") signOut(describe(e));
    throw e;
  }
  return data;
}

const enc = encodeURIComponent;

// ---- Event streams ----------------------------------------------------------

/**
 * Follows an SSE route over fetch, resuming with Last-Event-ID after a drop
 * (a server restart included) and telling `onState` "live" or
 * "reconnecting". Returns a function that stops it.
 */
function follow(path, onEvent, onState, { endsWithTask = false } = {}) {
  const ctl = new AbortController();
  let last = null;
  (async () => {
    let delay = 500;
    while (!ctl.signal.aborted) {
      let finished = false;
      try {
        const hd = headers({ Accept: "text/event-stream" });
        if (last) hd["Last-Event-ID"] = last;
        const r = await fetch(path, { headers: hd, signal: ctl.signal });
        if (r.status === 401) { signOut("Your token was refused. Sign in again."); return; }
        if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
        onState("live");
        delay = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) last = line.slice(3).trim();
              else if (line.startsWith("data:")) data += line.slice(5);
            }
            if (data) {
              const ev = JSON.parse(data);
              onEvent(ev);
              if (endsWithTask && ["completed", "failed", "dead", "cancelled"].includes(ev.state)) finished = true;
            }
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      if (finished) { onState("ended"); return; }
      onState("reconnecting");
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 5000);
    }
  })();
  return () => ctl.abort();
}

/** A stream indicator: "live", "reconnecting…", "ended". */
function streamBadge() {
  const el = h("span", { class: "badge", role: "status", "aria-live": "polite" }, "connecting…");
  el.set = (s) => {
    el.textContent = s === "live" ? "live" : s === "ended" ? "ended" : "reconnecting…";
    el.className = `badge ${s === "reconnecting" ? "reconnecting" : "live"}`;
    status(s === "reconnecting" ? "Lost the connection to the server; reconnecting…" : "");
  };
  return el;
}

/**
 * Keeps a list current: reloads it when a matching event arrives, and after
 * a reconnect (events missed while the server was away are replayed from the
 * last one seen, but a list that never saw one reloads in full).
 */
function liveList(path, load, badge) {
  let down = false;
  return follow(path, debounce(load), (s) => {
    badge.set(s);
    if (s === "live" && down) load();
    down = s === "reconnecting";
  });
}

/** Calls `fn` at most once per `ms` after a burst of calls. */
function debounce(fn, ms = 250) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(fn, ms); };
}

// ---- Roles ----------------------------------------------------------------

const has = (...roles) => state.me && roles.some((r) => state.me.roles.includes(r));
const reviewer = () => has("reviewer", "review_admin");

function renderNav(route) {
  const links = [];
  if (reviewer()) links.push(["#/inbox", "Review inbox"]);
  links.push(["#/queues", "Queues"]);
  links.push(["#/tasks", "Tasks"]);
  links.push(["#/workers", "Workers"]);
  links.push(["#/reviewers", "Reviewers"]);
  if (has("review_admin")) links.push(["#/dead", "Dead letter"]);
  const nav = state.me ? links.map(([href, text]) =>
    h("a", { href, "aria-current": route === href.slice(2) ? "page" : null }, text)) : [];
  if (state.me && state.me.grafana_url) {
    nav.push(h("a", { href: `${state.me.grafana_url}/d/forgeline-overview`, rel: "noopener noreferrer", target: "_blank" }, "Dashboards ↗"));
  }
  document.getElementById("nav").replaceChildren(...nav);
  const who = document.getElementById("who");
  who.replaceChildren(...(state.me ? [
    h("span", {}, "Signed in as ", h("strong", { id: "principal" }, state.me.principal), ` (${state.me.roles.join(", ")})`),
    h("button", { type: "button", onclick: () => signOut("Signed out.") }, "Sign out"),
  ] : []));
}

// ---- Views ----------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  state.signinMessage = message;
  if (location.hash !== "#/signin") location.hash = "#/signin";
  else route();
}

function viewSignin() {
  const input = h("textarea", { id: "token", name: "token", autocomplete: "off", spellcheck: "false", required: true });
  const msg = state.signinMessage ? h("p", { class: "error", role: "alert", id: "signin-message" }, state.signinMessage) : null;
  state.signinMessage = null;
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      state.token = token;
      try {
        state.me = await api("GET", "/api/v1/me");
        sessionStorage.setItem(TOKEN_KEY, token);
        location.hash = "#/";
      } catch (e) {
        state.token = null;
        form.querySelector(".error")?.remove();
        form.prepend(errorBox(e));
      }
    },
  }, msg,
  h("label", { for: "token" }, "Token"),
  input,
  h("p", { class: "empty" }, "Paste a forgeline token (forgeline token issue --sub you --role reviewer). It is kept for this tab only."),
  h("button", { class: "primary", type: "submit" }, "Sign in"));
  return [h("h1", {}, "Sign in"), form];
}

async function viewInbox(view) {
  const mine = h("div", { id: "mine" });
  const open = h("div", { id: "unassigned" });
  const badge = streamBadge();
  const load = async () => {
    try {
      const [m, u] = await Promise.all([
        api("GET", "/api/v1/reviews?mine=true&limit=500"),
        api("GET", "/api/v1/reviews?unassigned=true&limit=500"),
      ]);
      mine.replaceChildren(ticketTable(m.reviews, "Nothing is claimed by or assigned to you."));
      open.replaceChildren(ticketTable(u.reviews, "No unassigned reviews. New ones appear here as they arrive."));
    } catch (e) {
      mine.replaceChildren(errorBox(e));
    }
  };
  await load();
  const types = "review_requested,review_assigned,review_decided,review_expired,task_cancelled";
  view.stop = liveList(`/api/v1/events?type=${types}&last_event_id=now`, () => load(), badge);
  return [h("h1", {}, "Review inbox ", badge),
    h("h2", {}, "Mine"), mine, h("h2", {}, "Unassigned"), open];
}

function ticketTable(tickets, emptyText) {
  tickets.sort((a, b) => Date.parse(a.due_at) - Date.parse(b.due_at));
  return table(["Due", "Queue", "Task", "Flags", "Approvals", "State", ""], tickets.map((t) =>
    h("tr", { "data-ticket": t.id },
      h("td", {}, countdown(t.due_at)),
      h("td", {}, t.queue),
      h("td", { class: "mono" }, h("a", { href: `#/task/${t.task_id}` }, t.task_id)),
      h("td", {}, t.flagged_by.length ? t.flagged_by.join(", ") : "review required"),
      h("td", {}, `${t.approvals} of ${t.required_approvals}`),
      h("td", {}, t.holder ? `${t.state} by ${t.holder}` : t.state),
      h("td", {}, h("a", { class: "button", href: `#/review/${t.id}` }, "Open")))), emptyText);
}

async function viewReview(view, id) {
  const box = h("div", {});
  const notice = h("div", { id: "review-notice" });
  const render = async (banner) => {
    let t;
    try {
      t = await api("GET", `/api/v1/reviews/${enc(id)}`);
    } catch (e) {
      box.replaceChildren(errorBox(e));
      return;
    }
    notice.replaceChildren(...(banner ? [banner] : []));
    box.replaceChildren(...ticketPage(t, render, notice));
  };
  const banner = state.banner ? h("p", { class: "notice", role: "alert", id: "stale" }, state.banner) : null;
  state.banner = null;
  await render(banner);
  return [h("h1", {}, "Review ", h("span", { class: "mono" }, id)), notice, box];
}

function ticketPage(t, rerender, notice) {
  const d = t.dossier;
  const pending = ["open", "claimed", "assigned"].includes(t.state);
  const act = async (method, path, body, done) => {
    try {
      await api(method, path, body);
      await rerender(done ? h("p", { class: "notice", role: "status" }, done) : null);
    } catch (e) {
      if (e.code === "stale_dossier") {
        await rerender(h("p", { class: "notice", role: "alert", id: "stale" },
          "The dossier changed after you opened it (the result or the steps were updated). Nothing was decided. The new dossier is shown below; review it and decide again."));
      } else if (e.code === "ticket_closed") {
        await followTask(t, e, notice);
      } else {
        notice.replaceChildren(errorBox(e));
      }
    }
  };
  const actions = [];
  if (pending && t.holder !== state.me.principal && t.state === "open") {
    actions.push(h("button", { type: "button", id: "claim", onclick: () => act("POST", `/api/v1/reviews/${t.id}/claim`, {}, "Claimed.") }, "Claim"));
  }
  if (pending && t.holder && (t.holder === state.me.principal || has("review_admin"))) {
    actions.push(h("button", { type: "button", id: "release", onclick: () => act("POST", `/api/v1/reviews/${t.id}/release`, {}, "Released.") }, "Release"));
  }
  if (pending && has("review_admin")) {
    const who = h("input", { id: "assign-to", "aria-label": "Reviewer to assign", placeholder: "reviewer" });
    actions.push(h("span", {}, who, " ", h("button", { type: "button", onclick: () => who.value.trim() && act("POST", `/api/v1/reviews/${t.id}/assign`, { reviewer: who.value.trim() }, `Assigned to ${who.value.trim()}.`) }, "Assign")));
  }
  const decision = pending ? decisionForm(t, act) : h("p", { class: "notice" }, `This review is ${t.state}${t.outcome ? ` (${t.outcome})` : ""}.`);
  const run = d.run || {};
  return [
    h("div", { class: "grid" },
      h("span", {}, "Task"), h("a", { class: "mono", href: `#/task/${t.task_id}` }, t.task_id),
      h("span", {}, "Submitted by"), h("span", {}, t.task.submitted_by),
      h("span", {}, "Queue"), h("span", {}, t.queue),
      h("span", {}, "State"), h("span", { id: "ticket-state" }, t.holder ? `${t.state} by ${t.holder}` : t.state),
      h("span", {}, "Approvals"), h("span", { id: "approvals" }, `${t.approvals} of ${t.required_approvals}`),
      h("span", {}, "Due"), countdown(t.due_at),
      h("span", {}, "Dossier"), h("span", { class: "mono", id: "dossier-hash" }, d.dossier_hash)),
    h("div", { class: "actions" }, actions),
    h("h2", {}, "Guardrail flags"),
    table(["Policy", "Stage", "Verdict", "Reason"], d.guardrails.map((g) =>
      h("tr", {}, h("td", {}, g.policy), h("td", {}, g.stage), h("td", {}, g.verdict), h("td", {}, g.reason))), "No guardrail flagged this task."),
    h("h2", {}, "Payload"), json(d.task.payload),
    h("h2", {}, "Result"), h("div", { id: "result" }, json(d.task.result)),
    h("h2", {}, "Steps"), stepsTable(run.steps || []),
    h("h2", {}, "Votes"),
    table(["By", "Outcome", "Comment", "At"], t.votes.map((v) =>
      h("tr", {}, h("td", {}, v.by), h("td", {}, v.outcome), h("td", {}, v.comment || ""), h("td", {}, v.at))), "No votes yet."),
    h("h2", {}, "Decision"), decision,
    h("h2", {}, "Timeline"), timeline(t.task_id),
  ];
}

/**
 * The review closed while it was shown (another reviewer decided it, the
 * task was cancelled…). When the task is under review again — a rerun after
 * changes were requested, with a new dossier — go there and say why.
 */
async function followTask(t, err, notice) {
  try {
    const task = await api("GET", `/api/v1/tasks/${enc(t.task_id)}?events=0`);
    const next = task.reviews.find((r) => r.id !== t.id && ["open", "claimed", "assigned"].includes(r.state));
    if (next) {
      state.banner = "The review you were reading was closed and the task is under review again: its dossier changed. Nothing was decided. The new dossier is shown below; review it and decide again.";
      location.hash = `#/review/${next.id}`;
      return;
    }
    notice.replaceChildren(h("p", { class: "error", role: "alert" },
      `${describe(err)} The task is now ${task.state}; nothing was decided.`));
  } catch (e) {
    notice.replaceChildren(errorBox(e));
  }
}

/** The task's events, filled in when they arrive. */
function timeline(taskId) {
  const el = h("div", { id: "timeline" }, "Loading…");
  api("GET", `/api/v1/tasks/${enc(taskId)}?events=500`)
    .then((task) => el.replaceChildren(eventsTable(task.events)))
    .catch((e) => el.replaceChildren(errorBox(e)));
  return el;
}

function decisionForm(t, act) {
  const outcomes = [["approved", "Approve"], ["rejected", "Reject"], ["changes_requested", "Request changes"]];
  const comment = h("textarea", { id: "comment", name: "comment", maxlength: 4096 });
  const form = h("form", {
    id: "decision",
    onsubmit: (ev) => {
      ev.preventDefault();
      const outcome = new FormData(form).get("outcome");
      const body = { outcome, dossier_hash: t.dossier.dossier_hash };
      if (comment.value.trim()) body.comment = comment.value;
      act("POST", `/api/v1/reviews/${t.id}/decision`, body, `Recorded: ${outcome}.`);
    },
  },
  h("fieldset", { class: "inline" }, h("legend", {}, "Verdict"),
    outcomes.map(([v, text], i) => h("label", {}, h("input", { type: "radio", name: "outcome", value: v, checked: i === 0, id: `outcome-${v}` }), " ", text))),
  h("label", { for: "comment" }, "Comment (required to request changes)"), comment,
  h("p", { class: "empty" }, "Your verdict is bound to the dossier shown on this page."),
  h("button", { class: "primary", type: "submit", id: "submit-decision" }, "Submit decision"));
  return form;
}

function stepsTable(steps) {
  return table(["Step", "Outcome", "Exit", "Duration", "Output (tail)"], steps.map((s) =>
    h("tr", {}, h("td", {}, s.name), h("td", {}, s.outcome || "running"), h("td", {}, s.exit_code ?? ""),
      h("td", {}, s.duration_ms === null ? "" : `${s.duration_ms} ms`),
      h("td", {}, s.output_tail === null ? h("span", { class: "empty" }, "withheld") : h("pre", { class: "mono" }, s.output_tail || "")))), "No verification steps.");
}

function eventRow(e) {
  const data = e.data && e.data.withheld ? h("span", { class: "empty" }, "withheld") : h("span", { class: "mono" }, JSON.stringify(e.data));
  return h("tr", { "data-event": e.id }, h("td", {}, e.time), h("td", {}, e.type), h("td", {}, e.state || ""), h("td", {}, data));
}

function eventsTable(events) {
  return table(["Time", "Event", "State", "Data"], events.map(eventRow), "No events yet.");
}

async function viewTasks(view, params) {
  const q = new URLSearchParams(params);
  const stateSel = h("select", { id: "f-state", name: "state" }, h("option", { value: "" }, "any"),
    ["scheduled", "queued", "running", "verifying", "awaiting_review", "completed", "failed", "dead", "cancelled"]
      .map((s) => h("option", { value: s, selected: q.get("state") === s }, s)));
  const queue = h("input", { id: "f-queue", name: "queue", value: q.get("queue") || "" });
  const label = h("input", { id: "f-label", name: "label", placeholder: "key:value", value: q.get("label") || "" });
  const form = h("form", {
    class: "filters",
    onsubmit: (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      if (stateSel.value) p.set("state", stateSel.value);
      if (queue.value.trim()) p.set("queue", queue.value.trim());
      if (label.value.trim()) p.set("label", label.value.trim());
      location.hash = `#/tasks?${p}`;
    },
  }, h("div", {}, h("label", { for: "f-state" }, "State"), stateSel),
  h("div", {}, h("label", { for: "f-queue" }, "Queue"), queue),
  h("div", {}, h("label", { for: "f-label" }, "Label"), label),
  h("button", { type: "submit" }, "Filter"));
  const list = h("div", { id: "tasks" });
  const more = h("div", {});
  const badge = streamBadge();
  const load = async (cursor) => {
    const p = new URLSearchParams(q);
    p.set("limit", "50");
    if (cursor) p.set("cursor", cursor);
    try {
      const page = await api("GET", `/api/v1/tasks?${p}`);
      const rows = page.tasks.map((t) => h("tr", {},
        h("td", { class: "mono" }, h("a", { href: `#/task/${t.id}` }, t.id)), h("td", {}, t.queue),
        h("td", {}, t.state), h("td", {}, `${t.attempts}/${t.max_attempts}`), h("td", {}, ago(t.updated_at))));
      const tbl = table(["Task", "Queue", "State", "Attempts", "Updated"], rows, "No tasks match.");
      if (cursor) list.append(tbl); else list.replaceChildren(tbl);
      more.replaceChildren(...(page.next_cursor ? [h("button", { type: "button", id: "more", onclick: () => load(page.next_cursor) }, "Next page")] : []));
    } catch (e) {
      list.replaceChildren(errorBox(e));
    }
  };
  await load();
  const queueFilter = q.get("queue") ? `&queue=${enc(q.get("queue"))}` : "";
  view.stop = liveList(`/api/v1/events?last_event_id=now${queueFilter}`, () => load(), badge);
  return [h("h1", {}, "Tasks ", badge), form, list, more];
}

async function viewTask(view, id) {
  let t;
  try {
    t = await api("GET", `/api/v1/tasks/${enc(id)}?events=500`);
  } catch (e) {
    return [h("h1", {}, "Task"), errorBox(e)];
  }
  const badge = streamBadge();
  const tbody = h("tbody", {});
  const stateEl = h("span", { id: "task-state" }, t.state);
  const seen = new Set();
  const add = (e) => {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    tbody.append(eventRow(e));
    if (e.state) stateEl.textContent = e.state;
  };
  t.events.forEach(add);
  const traceCopy = t.trace_id ? h("button", { type: "button", onclick: () => navigator.clipboard?.writeText(t.trace_id) }, "Copy") : null;
  const hidden = (what) => (t.withheld || []).includes(what) && empty("Withheld: your roles show this task's metadata only.");
  const withheld = t.withheld ? h("p", { class: "notice" }, `Your roles show this task's metadata only; withheld: ${t.withheld.join(", ")}.`) : null;
  const after = t.events.length ? `?last_event_id=${t.events[t.events.length - 1].id}` : "";
  const TERMINAL = ["completed", "failed", "dead", "cancelled"];
  if (TERMINAL.includes(t.state)) badge.set("ended");
  else view.stop = follow(`/api/v1/tasks/${enc(id)}/events${after}`, add, badge.set, { endsWithTask: true });
  const actions = [];
  if (!TERMINAL.includes(t.state) && (has("review_admin") || (has("submitter") && t.submitted_by === state.me.principal))) {
    actions.push(h("button", {
      type: "button", id: "cancel",
      onclick: async () => {
        try { await api("POST", `/api/v1/tasks/${enc(id)}/cancel`, {}); } catch (e) { main().prepend(errorBox(e)); }
      },
    }, "Cancel task"));
  }
  return [
    h("h1", {}, "Task ", h("span", { class: "mono" }, id)), withheld,
    h("div", { class: "grid" },
      h("span", {}, "State"), stateEl,
      h("span", {}, "Queue"), h("span", {}, t.queue),
      h("span", {}, "Submitted by"), h("span", {}, t.submitted_by),
      h("span", {}, "Attempts"), h("span", {}, `${t.attempts} of ${t.max_attempts}`),
      h("span", {}, "Labels"), h("span", {}, Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "—"),
      h("span", {}, "Trace"), h("span", {}, h("span", { class: "mono", id: "trace-id" }, t.trace_id || "—"), " ", traceCopy),
      state.me.grafana_url ? h("span", {}, "Dashboards") : null,
      state.me.grafana_url ? h("a", { href: `${state.me.grafana_url}/d/forgeline-queue?var-queue=${enc(t.queue)}`, rel: "noopener noreferrer", target: "_blank" }, `queue ${t.queue} ↗`) : null,
      h("span", {}, "Last error"), h("span", {}, t.last_error || "—")),
    h("div", { class: "actions" }, actions),
    h("h2", {}, "Payload"), hidden("payload") || json(t.payload),
    h("h2", {}, "Result"), hidden("result") || json(t.result),
    ...t.runs.map((r) => [h("h2", {}, `Run ${r.attempt} (${r.outcome || "running"})`), stepsTable(r.steps)]).flat(),
    h("h2", {}, "Events ", badge),
    h("div", { class: "scroll" }, h("table", { id: "events" },
      h("thead", {}, h("tr", {}, ["Time", "Event", "State", "Data"].map((x) => h("th", { scope: "col" }, x)))), tbody)),
  ];
}

async function viewQueues(view) {
  const box = h("div", {});
  const badge = streamBadge();
  const load = async () => {
    try {
      const { queues } = await api("GET", "/api/v1/queues");
      box.replaceChildren(table(
        ["Queue", "Depth", "Oldest waiting", "Running", "Awaiting review", "Completed", "Failed / dead", "Completed / min (5 min)", "Leases since start", "Mean pickup"],
        queues.map((q) => h("tr", { "data-queue": q.name },
          h("td", {}, h("a", { href: `#/tasks?queue=${enc(q.name)}` }, q.name)),
          h("td", {}, q.depth),
          h("td", {}, q.oldest_age_seconds === null ? "—" : `${q.oldest_age_seconds.toFixed(1)} s`),
          h("td", {}, q.tasks.running + q.tasks.verifying),
          h("td", {}, q.tasks.awaiting_review),
          h("td", {}, q.tasks.completed),
          h("td", {}, q.tasks.failed + q.tasks.dead),
          h("td", {}, q.completed_per_minute.toFixed(1)),
          h("td", {}, q.leases_since_start),
          h("td", {}, q.pickup_mean_ms === null ? "—" : `${q.pickup_mean_ms.toFixed(1)} ms`))),
        "No queue has a task yet."));
    } catch (e) {
      box.replaceChildren(errorBox(e));
    }
  };
  await load();
  const types = "task_submitted,task_queued,task_leased,task_completed,task_failed,task_dead_lettered,task_cancelled,review_requested";
  view.stop = liveList(`/api/v1/events?type=${types}&last_event_id=now`, () => load(), badge);
  return [h("h1", {}, "Queues ", badge), box,
    h("p", { class: "empty" }, "Throughput counts the last five minutes; leases and pickup latency count since the server started. Longer views are on the Grafana dashboards.")];
}

async function viewWorkers(view) {
  const box = h("div", {});
  const badge = streamBadge();
  const load = async () => {
    try {
      const w = await api("GET", "/api/v1/workers");
      box.replaceChildren(table(["Worker", "Status", "Current task", "Last seen"], w.workers.map((x) =>
        h("tr", {}, h("td", { class: "mono" }, x.id), h("td", {}, x.status),
          h("td", { class: "mono" }, x.current_task ? h("a", { href: `#/task/${x.current_task}` }, x.current_task) : "—"),
          h("td", {}, ago(x.last_seen)))), "No worker has reported yet."));
    } catch (e) {
      box.replaceChildren(errorBox(e));
    }
  };
  await load();
  view.stop = liveList("/api/v1/events?type=task_leased,task_completed,task_failed,lease_expired,task_cancelled&last_event_id=now", () => load(), badge);
  return [h("h1", {}, "Workers ", badge), box];
}

async function viewDead(view) {
  const box = h("div", {});
  const badge = streamBadge();
  const load = async () => {
    try {
      const d = await api("GET", "/api/v1/dead-letter?limit=200");
      box.replaceChildren(table(["Task", "Queue", "Attempts", "Last error", ""], d.tasks.map((t) =>
        h("tr", {}, h("td", { class: "mono" }, h("a", { href: `#/task/${t.id}` }, t.id)), h("td", {}, t.queue),
          h("td", {}, `${t.attempts}/${t.max_attempts}`), h("td", {}, t.last_error || ""),
          h("td", {}, h("button", {
            type: "button",
            onclick: async () => {
              try { await api("POST", `/api/v1/dead-letter/${t.id}/requeue`, {}); await load(); } catch (e) { box.prepend(errorBox(e)); }
            },
          }, "Requeue")))), "The dead-letter queue is empty."));
    } catch (e) {
      box.replaceChildren(errorBox(e));
    }
  };
  await load();
  view.stop = liveList("/api/v1/events?type=task_dead_lettered,task_requeued&last_event_id=now", () => load(), badge);
  return [h("h1", {}, "Dead letter ", badge), box];
}

async function viewReviewers(view) {
  const box = h("div", {});
  const badge = streamBadge();
  const load = async () => {
    try {
      const m = await api("GET", "/api/v1/reviews/metrics");
      const sla = m.sla || {};
      box.replaceChildren(
        h("div", { class: "grid" },
          h("span", {}, "Backlog"), h("span", {}, `${m.backlog.total} (${Object.entries(m.backlog.by_state).map(([k, v]) => `${k} ${v}`).join(", ")})`),
          h("span", {}, "Oldest pending"), h("span", {}, m.oldest_open_age_seconds === null ? "—" : `${Math.round(m.oldest_open_age_seconds)} s`),
          h("span", {}, `SLA attainment (${m.window})`), h("span", {}, sla.attainment === null ? "—" : `${Math.round(sla.attainment * 100)} %`),
          h("span", {}, "SLA breaches"), h("span", {}, sla.breaches)),
        h("h2", {}, "Aging"),
        table(["Age", "Tickets"], m.aging.map((a) => h("tr", {}, h("td", {}, a.bucket), h("td", {}, a.count))), "—"),
        h("h2", {}, "Reviewers"),
        table(["Reviewer", "Decisions", "Per hour", "Holding"], m.reviewers.map((r) =>
          h("tr", {}, h("td", {}, r.reviewer), h("td", {}, r.decisions), h("td", {}, r.decisions_per_hour.toFixed(2)), h("td", {}, r.wip))), "No decisions in the window."));
    } catch (e) {
      box.replaceChildren(errorBox(e));
    }
  };
  await load();
  view.stop = liveList("/api/v1/events?type=review_requested,review_assigned,review_decided,review_expired&last_event_id=now", () => load(), badge);
  return [h("h1", {}, "Reviewers ", badge), box];
}

// ---- Router ---------------------------------------------------------------

async function route() {
  if (state.view && state.view.stop) state.view.stop();
  const view = {};
  state.view = view;
  status("");
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  if (!state.token || parts[0] === "signin") {
    renderNav("signin");
    show(...viewSignin());
    return;
  }
  if (!state.me) {
    try {
      state.me = await api("GET", "/api/v1/me");
    } catch (e) {
      if (e.status === 401) { signOut(describe(e)); return; }
      show(errorBox(e));
      return;
    }
  }
  const name = parts[0] || (reviewer() ? "inbox" : "tasks");
  renderNav(name);
  const views = {
    inbox: () => viewInbox(view),
    review: () => viewReview(view, parts[1]),
    tasks: () => viewTasks(view, query || ""),
    task: () => viewTask(view, parts[1]),
    workers: () => viewWorkers(view),
    queues: () => viewQueues(view),
    dead: () => viewDead(view),
    reviewers: () => viewReviewers(view),
  };
  const make = views[name];
  const nodes = make ? await make() : [h("h1", {}, "Not found"), empty(`There is no page "${name}".`)];
  if (state.view === view) {
    show(...nodes.filter(Boolean));
    window.scrollTo(0, 0);
    main().focus({ preventScroll: true });
  } else if (view.stop) {
    view.stop();
  }
}

// A sign-in link (`forgeline token issue --console`) carries the token in the
// fragment, which never reaches a server; it is moved to sessionStorage and
// wiped from the address bar and the history at once.
(function takeLinkToken() {
  const m = location.hash.match(/^#token=([A-Za-z0-9._-]+)$/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, m[1]);
    state.token = m[1];
    history.replaceState(null, "", `${location.pathname}#/`);
  }
})();

window.addEventListener("hashchange", route);
route();
