// forgeline smoke test: every path of the API once or a few times, in under
// a minute, with the SLO thresholds (and every check must pass). Use it after
// each deploy (docs/runbooks/alerts.md, "Staging k6 smoke");
// tests/ops/test_e2e.py runs it against a real server (config
// tests/ops/forgeline_e2e.toml) scraped by a real Prometheus, then checks that
// every dashboard panel has data.
//
//   k6 run -e BASE_URL=http://127.0.0.1:7878 -e TOKEN="$(cat forgeline-data/admin-token)" loadtest/smoke.js
//
// What it does (scenarios run side by side):
//   submit     4 tasks/s for 24 s to QUEUE; each carries a `behavior` label
//              that tells the workers what to do with it (lib/forgeline.js
//              processLease): complete, retry (fail retryable, then
//              complete), dead (max_attempts 1: dead-letter), fail
//              (non-retryable), expire (the lease runs out, a late complete
//              gets 409 stale_lease), review (review.required), multi (two
//              agents), and with the matching server policies flag (a tool
//              outside the allow list), secret (a key in the result),
//              toolblock / outblock (guardrail blocks at the tool and output
//              stages, 422).
//   workers    3 external workers: lease (long-poll wait_ms), heartbeat,
//              agent/tool/verification events (step, exit_code,
//              duration_ms), complete or fail.
//   reviewers  alice and bob: list open tickets, claim, read the dossier,
//              decide (approved / rejected / changes_requested) bound to the
//              dossier hash; every 4th decision is first sent with a stale
//              hash (409 stale_dossier).
//   readers    task list, task, run, workers, reviewer metrics, bounded task
//              streams and firehose reads (max_events), time to first event.
//   negative   deliberate 4xx: malformed JSON (400), unknown field and bad
//              priority (422), unknown route (404), wrong method (405), bad
//              and missing token (401), wrong role (403), bad id (404), bad
//              query (400), oversized payload (413), input guardrail block
//              (422, with BLOCK_TEXT), idempotent replay (200) and key reuse
//              (409), cancel (200) and cancel again (409), unknown lease (404).
//   executor   (when /health/ready reports the built-in executor) tasks on
//              EXECUTOR_QUEUE, one per EXECUTOR_STEPS recipe, and POST
//              /api/v1/tasks/stream.
//   tail       after the others: dead-letter list and requeue, audit chain
//              check, a worker status report, review tickets on
//              QUEUE-review (claim, release, assign, N-of-M approval), an SLA
//              breach (with SLA_QUEUE), a filtered firehose read. Then it
//              cleans up (decides and cancels what is left), unless
//              LEAVE_PENDING=1.
//
// It leaves on the target: completed, failed and dead tasks, and so
// ForgelineDeadLetterGrowth fires for 15 minutes (the dead-letter path is
// part of the smoke test). Set DEAD_LETTER=0 to skip it.
//
// Env: BASE_URL, FORGELINE_JWT_SECRET or TOKEN, JWT_ISSUER, JWT_AUDIENCE,
// REVIEWERS (alice,bob), SUMMARY, ALLOW_REMOTE, and to match the server:
//   QUEUE            queue the k6 workers serve (k6-smoke); not one the
//                    built-in executor or real workers serve
//   EXECUTOR_QUEUE   a queue of executor.queues (default)
//   EXECUTOR_STEPS   recipes to run there, comma-separated; one task each
//                    (none: a task without steps)
//   BLOCK_TEXT, FLAG_TOOL, SECRET_FLAG   the guardrail policies (lib/forgeline.js)
//   SLA_QUEUE, SLA_ESCALATE_TO   a review queue with an SLA of a few
//                    seconds and on_timeout = "escalate" to that principal
//   LEAVE_PENDING    1: leave review tickets pending and tasks queued (so a
//                    Prometheus scrape sees the review gauges)
//   DEAD_LETTER      0: no dead-letter tasks

import { check, sleep } from 'k6';
import exec from 'k6/execution';
import {
  call,
  claim,
  decide,
  errorCode,
  getReview,
  json,
  lease,
  latestEventId,
  listReviews,
  preflight,
  processLease,
  readRound,
  readStream,
  reviewOnce,
  reviewerNames,
  setupTokens,
  sloThresholds,
  submit,
  taskBody,
  timeToFirstEvent,
  workOnce,
  envStr,
  SERVER,
  SUMMARY_TREND_STATS,
} from './lib/forgeline.js';
import { summaryHandler } from './lib/summary.js';

const QUEUE = envStr('QUEUE', 'k6-smoke');
const HOLD_QUEUE = `${QUEUE}-review`;
const EXECUTOR_QUEUE = envStr('EXECUTOR_QUEUE', 'default');
const EXECUTOR_STEPS = envStr('EXECUTOR_STEPS', '')
  .split(',')
  .map((x) => x.trim())
  .filter(Boolean);
const SLA_QUEUE = envStr('SLA_QUEUE', '');
const SLA_ESCALATE_TO = envStr('SLA_ESCALATE_TO', '');
const LEAVE_PENDING = __ENV.LEAVE_PENDING === '1';

// The submit scenario's rotation, without what the server cannot do.
const BEHAVIORS = [
  'complete', 'retry', 'review', 'dead', 'multi', 'flag', 'fail', 'review',
  'expire', 'complete', 'toolblock', 'review', 'outblock', 'secret', 'complete', 'review',
].filter(
  (b) =>
    !(b === 'flag' && !SERVER.flagTool) &&
    !(b === 'secret' && !SERVER.secretFlag) &&
    !((b === 'toolblock' || b === 'outblock') && !SERVER.blockText) &&
    !(b === 'dead' && __ENV.DEAD_LETTER === '0'),
);

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '20s',
  teardownTimeout: '10s',
  scenarios: {
    negative: { executor: 'per-vu-iterations', exec: 'negative', vus: 1, iterations: 1, maxDuration: '20s' },
    executor: { executor: 'per-vu-iterations', exec: 'executorTasks', vus: 1, iterations: 1, maxDuration: '25s' },
    submit: {
      executor: 'constant-arrival-rate',
      exec: 'submitTask',
      rate: 4,
      timeUnit: '1s',
      duration: '24s',
      preAllocatedVUs: 2,
      maxVUs: 8,
    },
    workers: { executor: 'constant-vus', exec: 'worker', vus: 3, duration: '30s', gracefulStop: '10s' },
    reviewers: { executor: 'constant-vus', exec: 'reviewer', vus: 2, startTime: '5s', duration: '26s', gracefulStop: '5s' },
    readers: {
      executor: 'constant-arrival-rate',
      exec: 'reader',
      rate: 2,
      timeUnit: '1s',
      duration: '30s',
      preAllocatedVUs: 4,
      maxVUs: 10,
    },
    tail: { executor: 'per-vu-iterations', exec: 'tail', vus: 1, iterations: 1, startTime: '34s', maxDuration: '25s' },
  },
  thresholds: sloThresholds({
    checks: 'rate==1',
    extra: {
      // Every path ran.
      tasks_worked: ['count>40'],
      review_decisions: ['count>5'],
      sse_events: ['count>20'],
      sse_time_to_first_event: ['max>0'],
    },
  }),
};

export function setup() {
  const tokens = setupTokens(3600);
  preflight(tokens);
  const ready = json(call('GET', '/health/ready', { name: 'GET /health/ready' })) || {};
  tokens.executor = ((ready.checks || {}).executor || 'disabled') !== 'disabled';
  return tokens;
}

// ---------------------------------------------------------------------------

export function submitTask(tokens) {
  const behavior = BEHAVIORS[exec.scenario.iterationInTest % BEHAVIORS.length];
  const res = submit(tokens, taskBody(behavior, QUEUE), {
    headers: { 'Idempotency-Key': `smoke-${exec.scenario.iterationInTest}-${Date.now()}` },
  });
  check(res, { 'submit: task queued': (r) => (json(r) || {}).state === 'queued' });
}

export function worker(tokens) {
  workOnce(tokens, QUEUE, `k6-smoke-${exec.vu.idInTest}`, { max: 2, waitMs: 2000 });
}

export function reviewer(tokens) {
  const names = reviewerNames();
  const i = exec.scenario.iterationInTest;
  const name = names[i % names.length];
  // With one TOKEN for everyone, alice and bob are one principal and can
  // trip over each other's tickets.
  const r = reviewOnce(tokens.reviewers[name], name, { queue: QUEUE, staleFirst: i % 4 === 0, conflictOk: tokens.shared });
  if (!r) sleep(0.5);
}

export function reader(tokens) {
  const tasks = readRound(tokens, QUEUE);
  const i = exec.scenario.iterationInTest;
  if (tasks.length) {
    const t = tasks[Math.floor(Math.random() * tasks.length)];
    const s = readStream(tokens.observer, `/api/v1/tasks/${t.id}/events`, {
      maxEvents: 50,
      idleTimeout: '1s',
      name: 'GET /api/v1/tasks/{id}/events',
    });
    check(s.res, { 'task stream: 200 with events': (r) => r.status === 200 && s.count >= 1 });
  }
  switch (i % 4) {
    case 0: {
      // Firehose from the start (replay), bounded.
      const s = readStream(tokens.observer, '/api/v1/events', { maxEvents: 25, idleTimeout: '2s', name: 'GET /api/v1/events' });
      check(s.res, { 'firehose: 200 with 25 events': (r) => r.status === 200 && s.count === 25 });
      break;
    }
    case 1: {
      const s = timeToFirstEvent(tokens.observer, '/api/v1/events', { name: 'GET /api/v1/events' });
      check(s.res, { 'firehose first event: 200': (r) => r.status === 200 && s.count === 1 });
      break;
    }
    case 2: {
      const w = call('GET', '/api/v1/workers', { token: tokens.observer, name: 'GET /api/v1/workers' });
      check(w, { 'workers: 200': (r) => r.status === 200 });
      const m = call('GET', '/api/v1/reviews/metrics?window=1h', { token: tokens.observer, name: 'GET /api/v1/reviews/metrics' });
      check(m, { 'review metrics: 200': (r) => r.status === 200 && (json(r) || {}).window === '1h' });
      break;
    }
    default: {
      // Live firehose: resume at the newest event, wait for the next one.
      const last = latestEventId(tokens.observer);
      const s = readStream(tokens.observer, `/api/v1/events?queue=${QUEUE}`, {
        maxEvents: 3,
        idleTimeout: '3s',
        lastEventId: last,
        name: 'GET /api/v1/events',
      });
      check(s.res, {
        'live firehose: 200, only newer events': (r) =>
          r.status === 200 && s.events.every((e) => !last || e.id > last),
      });
    }
  }
}

// ---------------------------------------------------------------------------

function expectError(res, status, code, label) {
  check(res, { [label]: (r) => r.status === status && errorCode(r) === code });
}

export function negative(tokens) {
  const sub = tokens.submitter;
  const post = (body, expect, extra = {}) =>
    call('POST', '/api/v1/tasks', Object.assign({ token: sub, body, expect, name: 'POST /api/v1/tasks' }, extra));

  expectError(post(`{"queue": "${QUEUE}", `, [400]), 400, 'malformed_json', 'malformed JSON: 400 malformed_json');
  expectError(post({ prio: 1 }, [422]), 422, 'invalid', 'unknown field: 422 invalid');
  expectError(post({ priority: 12 }, [422]), 422, 'invalid', 'priority out of range: 422 invalid');
  expectError(
    call('GET', '/api/v1/no-such-route', { token: tokens.observer, expect: [404], name: 'GET unmatched' }),
    404,
    'not_found',
    'unknown route: 404',
  );
  expectError(
    call('DELETE', '/api/v1/tasks', { token: sub, expect: [405], name: 'DELETE /api/v1/tasks' }),
    405,
    'method_not_allowed',
    'wrong method: 405',
  );
  expectError(
    call('GET', '/api/v1/tasks', { token: tokens.bad, expect: [401], name: 'GET /api/v1/tasks' }),
    401,
    'unauthorized',
    'bad token: 401',
  );
  expectError(call('GET', '/api/v1/tasks', { expect: [401], name: 'GET /api/v1/tasks' }), 401, 'unauthorized', 'no token: 401');
  if (!tokens.shared) {
    expectError(
      call('POST', '/api/v1/tasks', { token: tokens.observer, body: {}, expect: [403], name: 'POST /api/v1/tasks' }),
      403,
      'forbidden',
      'wrong role: 403',
    );
  }
  expectError(
    call('GET', '/api/v1/tasks/not-a-ulid', { token: tokens.observer, expect: [404], name: 'GET /api/v1/tasks/{id}' }),
    404,
    'not_found',
    'bad task id: 404',
  );
  expectError(
    call('GET', '/api/v1/tasks?state=done', { token: tokens.observer, expect: [400], name: 'GET /api/v1/tasks' }),
    400,
    'bad_request',
    'bad query: 400',
  );
  expectError(
    post({ queue: QUEUE, payload: { blob: 'x'.repeat(300 * 1024) } }, [413]),
    413,
    'too_large',
    'oversized payload: 413',
  );
  if (SERVER.blockText) {
    const blocked = post({ queue: QUEUE, payload: { cmd: SERVER.blockText }, labels: { behavior: 'complete' } }, [422]);
    check(blocked, {
      'input guardrail: 422 guardrail_blocked at the input stage': (r) => {
        const e = (json(r) || {}).error || {};
        return r.status === 422 && e.code === 'guardrail_blocked' && (e.details || {}).stage === 'input';
      },
    });
  }

  // Idempotency: same key and body -> replay; other body -> 409.
  const key = `smoke-idem-${Date.now()}`;
  const body = JSON.stringify(taskBody('complete', QUEUE));
  const first = post(body, undefined, { headers: { 'Idempotency-Key': key } });
  check(first, { 'idempotent submit: 201': (r) => r.status === 201 });
  const again = post(body, undefined, { headers: { 'Idempotency-Key': key } });
  check(again, {
    'idempotent replay: 200 Idempotent-Replay, same task': (r) =>
      r.status === 200 && r.headers['Idempotent-Replay'] === 'true' && (json(r) || {}).id === (json(first) || {}).id,
  });
  expectError(
    post(JSON.stringify(taskBody('complete', QUEUE)), [409], { headers: { 'Idempotency-Key': key } }),
    409,
    'idempotency_key_reused',
    'idempotency key reused: 409',
  );

  // A delayed task, cancelled by its submitter; cancelling again is a 409.
  const delayed = submit(tokens, taskBody('complete', QUEUE, { delay: '1h' }));
  check(delayed, { 'delayed submit: scheduled': (r) => (json(r) || {}).state === 'scheduled' });
  const id = (json(delayed) || {}).id;
  if (id) {
    const c = call('POST', `/api/v1/tasks/${id}/cancel`, {
      token: sub,
      body: { reason: 'smoke: superseded' },
      name: 'POST /api/v1/tasks/{id}/cancel',
    });
    check(c, { 'cancel: 200 cancelled': (r) => r.status === 200 && (json(r) || {}).state === 'cancelled' });
    expectError(
      call('POST', `/api/v1/tasks/${id}/cancel`, { token: sub, expect: [409], name: 'POST /api/v1/tasks/{id}/cancel' }),
      409,
      'illegal_transition',
      'cancel a cancelled task: 409',
    );
  }
  expectError(
    call('POST', '/api/v1/leases/01M80SHQK9E851PWZ5VVDR71P9/heartbeat', {
      token: tokens.worker,
      body: { token: 1 },
      expect: [404],
      name: 'POST /api/v1/leases/{lease_id}/heartbeat',
    }),
    404,
    'not_found',
    'heartbeat on an unknown lease: 404',
  );
}

export function executorTasks(tokens) {
  if (!tokens.executor) return; // the server runs no built-in executor
  // One task per recipe (a task without steps when none is named).
  const ids = [];
  const recipes = EXECUTOR_STEPS.length ? EXECUTOR_STEPS.map((r) => [r]) : [[]];
  for (const steps of recipes) {
    const r = submit(tokens, { queue: EXECUTOR_QUEUE, steps, labels: { source: 'k6' } });
    ids.push((json(r) || {}).id);
  }
  expectError(
    call('POST', '/api/v1/tasks', {
      token: tokens.submitter,
      body: { queue: EXECUTOR_QUEUE, steps: ['k6-no-such-recipe'] },
      expect: [422],
      name: 'POST /api/v1/tasks',
    }),
    422,
    'invalid',
    'unknown recipe on an executor queue: 422',
  );
  // Submit and stream until the task ends (the first recipe, or no steps).
  const s = call('POST', '/api/v1/tasks/stream?max_events=100&idle_timeout=15s', {
    token: tokens.submitter,
    body: { queue: EXECUTOR_QUEUE, steps: recipes[0], labels: { source: 'k6' } },
    kind: 'stream',
    name: 'POST /api/v1/tasks/stream',
  });
  check(s, {
    'submit and stream: 200, ends at a terminal event': (r) => {
      if (r.status !== 200) return false;
      const lines = String(r.body).split('\n').filter((l) => l.startsWith('event:'));
      return lines.length >= 3 && /^event:task_(completed|failed|dead_lettered)$/.test(lines[lines.length - 1]);
    },
  });
  // Each executor task's stream ends by itself when the task ends.
  for (const id of ids.filter(Boolean)) {
    const t = readStream(tokens.observer, `/api/v1/tasks/${id}/events`, {
      maxEvents: 200,
      idleTimeout: '15s',
      name: 'GET /api/v1/tasks/{id}/events',
    });
    check(t.res, {
      'executor task stream: ends at a terminal event': (r) =>
        r.status === 200 && /^task_(completed|failed|dead_lettered)$/.test((t.events[t.events.length - 1] || {}).event || ''),
    });
  }
}

// ---------------------------------------------------------------------------

// Leases and works `n` tasks of `queue` as worker `workerId` (bounded).
function workQueue(tokens, queue, workerId, n, deadlineMs) {
  let done = 0;
  const until = Date.now() + deadlineMs;
  while (done < n && Date.now() < until) {
    const leases = lease(tokens, queue, workerId, { max: n - done, waitMs: 2000 });
    for (const l of leases) {
      processLease(tokens, l);
      done += 1;
    }
  }
  return done;
}

export function tail(tokens) {
  const admin = tokens.review_admin;
  const names = reviewerNames();
  const alice = tokens.reviewers[names[0]];
  const bob = tokens.reviewers[names[1 % names.length]];
  const bobName = names[1 % names.length];

  // Dead-letter: list and requeue one.
  const dl = call('GET', `/api/v1/dead-letter?queue=${QUEUE}&limit=10`, { token: admin, name: 'GET /api/v1/dead-letter' });
  const dead = (json(dl) || {}).tasks || [];
  check(dl, {
    'dead-letter: 200 with dead tasks': (r) => r.status === 200 && (dead.length > 0 || __ENV.DEAD_LETTER === '0'),
  });
  if (dead.length) {
    const rq = call('POST', `/api/v1/dead-letter/${dead[0].id}/requeue`, { token: admin, name: 'POST /api/v1/dead-letter/{id}/requeue' });
    check(rq, { 'requeue: 200 queued': (r) => r.status === 200 && (json(r) || {}).state === 'queued' });
  }
  const av = call('GET', '/api/v1/audit/verify', { token: admin, name: 'GET /api/v1/audit/verify' });
  check(av, { 'audit chain verifies': (r) => r.status === 200 && (json(r) || {}).ok === true });
  const st = call('POST', '/api/v1/workers/k6-smoke-tail/status', {
    token: tokens.worker,
    body: { status: 'idle', detail: 'smoke tail' },
    name: 'POST /api/v1/workers/{worker_id}/status',
  });
  check(st, { 'worker status: 200': (r) => r.status === 200 });

  // Four tickets: t1 claimed by alice, t2 claimed and released by bob then
  // assigned to him by a review_admin, t3 left open, t4 two approvals.
  const hold = [];
  for (let i = 0; i < 4; i++) {
    // Two approvals need two principals (not with one TOKEN for everyone).
    const extra = i === 3 && !tokens.shared ? { review: { required: true, required_approvals: 2 } } : {};
    const r = submit(tokens, taskBody('review', HOLD_QUEUE, extra));
    hold.push((json(r) || {}).id);
  }
  const worked = workQueue(tokens, HOLD_QUEUE, 'k6-smoke-tail', 4, 10000);
  check(worked, { 'review queue: 4 tasks worked': (n) => n === 4 });

  let slaTask = null;
  if (SLA_QUEUE) {
    slaTask = (json(submit(tokens, taskBody('review', SLA_QUEUE))) || {}).id;
    workQueue(tokens, SLA_QUEUE, 'k6-smoke-tail', 1, 5000);
  }

  const tickets = listReviews(admin, `queue=${HOLD_QUEUE}&limit=50`);
  const byTask = {};
  for (const t of tickets) byTask[t.task_id] = t;
  const [t1, t2, t3, t4] = hold.map((id) => byTask[id]);
  check(tickets, { 'review queue: 4 open tickets': () => !!(t1 && t2 && t3 && t4) });
  if (t1 && t2 && t3 && t4) {
    check(claim(alice, t1.id, [200]), { 'claim (kept): 200': (r) => r.status === 200 });
    check(claim(bob, t2.id, [200]), { 'claim: 200': (r) => r.status === 200 });
    const rel = call('POST', `/api/v1/reviews/${t2.id}/release`, { token: bob, name: 'POST /api/v1/reviews/{id}/release' });
    check(rel, { 'release: 200 open': (r) => r.status === 200 && (json(r) || {}).state === 'open' });
    const as = call('POST', `/api/v1/reviews/${t2.id}/assign`, {
      token: admin,
      body: { reviewer: bobName },
      name: 'POST /api/v1/reviews/{id}/assign',
    });
    check(as, { 'assign: 200 assigned': (r) => r.status === 200 && (json(r) || {}).state === 'assigned' });
    const d4 = getReview(alice, t4.id);
    if (d4 && tokens.shared) {
      const a = decide(alice, t4.id, 'approved', d4.dossier.dossier_hash, 'looks right');
      check(a, { 'approval: decided approved': (r) => r.status === 200 && (json(r) || {}).outcome === 'approved' });
    } else if (d4) {
      const a1 = decide(alice, t4.id, 'approved', d4.dossier.dossier_hash, 'looks right');
      check(a1, { 'first of two approvals: ticket open again': (r) => r.status === 200 && (json(r) || {}).state === 'open' });
      check(claim(bob, t4.id, [200]), { 'claim: 200': (r) => r.status === 200 });
      const a2 = decide(bob, t4.id, 'approved', getReview(bob, t4.id).dossier.dossier_hash, null);
      check(a2, { 'second approval: decided approved': (r) => r.status === 200 && (json(r) || {}).outcome === 'approved' });
    }
  }

  // The SLA clock: SLA_QUEUE's target is a few seconds, then it escalates.
  if (slaTask) {
    let ticket = null;
    const until = Date.now() + 10000;
    while (Date.now() < until) {
      ticket = listReviews(admin, `queue=${SLA_QUEUE}&limit=50`).find((t) => t.task_id === slaTask) || null;
      if (ticket && ticket.sla_breached) break;
      sleep(0.5);
    }
    check(ticket, {
      'SLA breach: escalated': (t) =>
        !!t && t.sla_breached === true && t.escalated === true && (!SLA_ESCALATE_TO || t.holder === SLA_ESCALATE_TO),
    });
  }

  const f = readStream(tokens.observer, '/api/v1/events?type=review_expired,review_assigned,review_decided', {
    maxEvents: 5,
    idleTimeout: '2s',
    name: 'GET /api/v1/events',
  });
  check(f.res, {
    'filtered firehose: review events only': (r) =>
      r.status === 200 && f.count >= 1 && f.events.every((e) => /^review_/.test(e.event)),
  });

  if (!LEAVE_PENDING) cleanup(tokens, [QUEUE, HOLD_QUEUE].concat(SLA_QUEUE ? [SLA_QUEUE] : []));
}

// Leaves nothing pending on the smoke queues: approves every pending ticket
// (review_admin may decide held tickets) and cancels what is still waiting.
function cleanup(tokens, queues) {
  const admin = tokens.review_admin;
  for (const q of queues) {
    for (const t of listReviews(admin, `queue=${q}&limit=500`)) {
      const full = getReview(admin, t.id);
      if (!full) continue;
      const d = decide(admin, t.id, 'approved', full.dossier.dossier_hash, 'k6 smoke cleanup', [200, 409]);
      check(d, { 'cleanup: ticket decided': (r) => r.status === 200 || errorCode(r) === 'already_decided' || errorCode(r) === 'ticket_closed' });
    }
    for (const state of ['queued', 'scheduled', 'awaiting_review']) {
      const list = call('GET', `/api/v1/tasks?queue=${q}&state=${state}&limit=500`, { token: admin, name: 'GET /api/v1/tasks' });
      for (const t of (json(list) || {}).tasks || []) {
        const c = call('POST', `/api/v1/tasks/${t.id}/cancel`, {
          token: admin,
          body: { reason: 'k6 smoke cleanup' },
          expect: [200, 409],
          name: 'POST /api/v1/tasks/{id}/cancel',
        });
        check(c, { 'cleanup: task cancelled': (r) => r.status === 200 || errorCode(r) === 'illegal_transition' });
      }
    }
  }
}

export const handleSummary = summaryHandler('smoke');
