// Shared code of the forgeline k6 scripts (loadtest/*.js).
//
// - BASE_URL: __ENV.BASE_URL, default http://127.0.0.1:7878. Any host that is
//   not loopback is refused unless __ENV.ALLOW_REMOTE=1.
// - Tokens: setupTokens() (call it from setup()) mints one HS256 JWT per role
//   from __ENV.FORGELINE_JWT_SECRET (claims sub, roles, iat, nbf, exp, plus
//   iss/aud from __ENV.JWT_ISSUER / __ENV.JWT_AUDIENCE when the server sets
//   auth.issuer / auth.audience), or uses __ENV.TOKEN for every role.
// - SLO thresholds (ops-conventions.md; the same figures as the alerts in
//   alerts/forgeline.rules.yml and the dashboards): sloThresholds().
// - Requests are tagged `kind`: `api` (counted in the latency threshold),
//   `longpoll` (the lease long-poll) or `stream` (SSE). The SLO excludes the
//   lease route and the three streaming routes, and so do the thresholds.
//   `name` is the route template, so URLs with ids do not make new series.

import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

// ---------------------------------------------------------------------------
// Target
// ---------------------------------------------------------------------------

function resolveBaseUrl() {
  const raw = (__ENV.BASE_URL || 'http://127.0.0.1:7878').trim().replace(/\/+$/, '');
  const m = /^(https?):\/\/(\[[0-9a-fA-F:.]+\]|[^/:?#\[\]]+)(?::(\d+))?(\/[^?#]*)?$/.exec(raw);
  if (!m) {
    throw new Error(`BASE_URL ${JSON.stringify(raw)} is not an http(s) URL such as http://127.0.0.1:7878`);
  }
  const host = m[2].toLowerCase();
  const loopback =
    host === 'localhost' ||
    host === '[::1]' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  if (!loopback && __ENV.ALLOW_REMOTE !== '1') {
    throw new Error(
      `BASE_URL host ${host} is not a loopback address; these scripts put real load on a server, ` +
        'so set ALLOW_REMOTE=1 to run them against anything but 127.0.0.1/localhost',
    );
  }
  return raw;
}

export const BASE_URL = resolveBaseUrl();

// Environment overrides: envNum('RATE', 50), envStr('DURATION', '5m').
export function envNum(name, def) {
  const v = __ENV[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${JSON.stringify(v)} is not a number`);
  return n;
}

export function envStr(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : v;
}

// Seconds in a k6 duration such as 500ms, 90s, 5m, 2h or 1h30m.
export function durationSeconds(d) {
  const text = String(d).trim();
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let used = '';
  let m;
  while ((m = re.exec(text)) !== null) {
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
    used += m[0];
  }
  if (!used || used !== text.replace(/\s+/g, '')) throw new Error(`not a duration: ${JSON.stringify(d)} (use e.g. 30s, 5m, 1h30m)`);
  return total;
}

// ---------------------------------------------------------------------------
// SLOs and thresholds
// ---------------------------------------------------------------------------

// The SLOs of ops-conventions.md; alerts/forgeline.rules.yml alerts on the
// same figures (availability 99.9 %: error budget 0.001; latency: 99 % of
// non-streaming API requests within 250 ms; queue wait: 99 % within 30 s).
export const SLO = {
  availability: 0.999, // share of API requests answered without a 5xx
  errorBudget: 0.001,
  latencyP99Ms: 250, // p(99) of non-streaming API requests
  queueWaitP99Ms: 30000, // p(99) of the time from eligible to lease
};

// Thresholds shared by every script. `abort` makes the availability and
// latency thresholds stop the run as soon as they fail (stress.js).
// `LATENCY_SLO=0` drops the latency threshold (the figure is still measured
// and printed): a pass/fail test run on a shared machine keeps every
// availability and correctness threshold without failing on a slow minute.
export function sloThresholds({ abort = false, checks = 'rate>0.99', extra = {} } = {}) {
  const t = (expr) => (abort ? { threshold: expr, abortOnFail: true, delayAbortEval: '10s' } : expr);
  const latency = (__ENV.LATENCY_SLO || '1').trim() !== '0';
  const thresholds = Object.assign(
    {
      // Availability: any response outside the expected statuses (5xx,
      // unexpected 4xx, network errors) counts; deliberate 4xx are declared
      // expected per request and do not.
      http_req_failed: [t(`rate<${SLO.errorBudget}`)],
      // The availability SLO proper: 5xx (and connection errors) on API routes.
      api_server_errors: [t(`rate<${SLO.errorBudget}`)],
      // Latency: non-streaming API requests only (kind:api).
      'http_req_duration{kind:api}': [t(`p(99)<${SLO.latencyP99Ms}`)],
      checks: [checks],
    },
    extra,
  );
  if (!latency) {
    // Keep the series in the summary (p(99) is still reported), with no bound.
    thresholds['http_req_duration{kind:api}'] = [];
  }
  return thresholds;
}

// Trend stats in the JSON and text summaries (p(99) is the SLO's percentile).
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

// ---------------------------------------------------------------------------
// Custom metrics
// ---------------------------------------------------------------------------

export const serverErrors = new Rate('api_server_errors');
export const sseEvents = new Counter('sse_events');
export const sseTimeToFirstEvent = new Trend('sse_time_to_first_event', true);
export const queuePickup = new Trend('task_pickup', true); // submit -> lease, as the worker sees it
export const tasksProcessed = new Counter('tasks_worked');
export const reviewDecisions = new Counter('review_decisions');
export const reviewConflicts = new Counter('review_conflicts');
export const reviewDecisionLatency = new Trend('review_decision_latency', true); // ticket opened -> decision

// Every request is expected to answer 2xx unless it says otherwise.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }));

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

export const ROLES = ['observer', 'submitter', 'worker', 'reviewer', 'review_admin'];

function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

// An HS256 JWT (docs/security.md: sub, roles, exp required; nbf, iat; iss/aud
// when the server has auth.issuer / auth.audience).
export function mintToken(secret, sub, roles, ttlSeconds) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, roles, iat: now, nbf: now - 5, exp: now + ttlSeconds };
  if (__ENV.JWT_ISSUER) claims.iss = __ENV.JWT_ISSUER;
  if (__ENV.JWT_AUDIENCE) claims.aud = __ENV.JWT_AUDIENCE;
  const signingInput = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  const sig = crypto.hmac('sha256', secret, signingInput, 'base64rawurl');
  return `${signingInput}.${sig}`;
}

export function reviewerNames() {
  return (__ENV.REVIEWERS || 'alice,bob')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

// Tokens for setup(): {observer, submitter, worker, review_admin, reviewers:
// {name: token}, bad}. ttlSeconds should outlast the run.
export function setupTokens(ttlSeconds = 4 * 3600) {
  const names = reviewerNames();
  const ttl = parseInt(__ENV.TOKEN_TTL || `${ttlSeconds}`, 10);
  if (__ENV.TOKEN) {
    // One token (e.g. the admin token of <data_dir>/admin-token) for every
    // role. Reviewers then share one principal.
    const t = __ENV.TOKEN.trim();
    const reviewers = {};
    for (const n of names) reviewers[n] = t;
    return {
      shared: true,
      observer: t,
      submitter: t,
      worker: t,
      review_admin: t,
      reviewers,
      bad: `${t.slice(0, -4)}AAAA`,
    };
  }
  const secret = __ENV.FORGELINE_JWT_SECRET;
  if (!secret) {
    throw new Error(
      'set FORGELINE_JWT_SECRET (the server\'s HS256 secret, e.g. the content of <data_dir>/jwt-secret) ' +
        'or TOKEN (a token with every role, e.g. <data_dir>/admin-token)',
    );
  }
  const reviewers = {};
  for (const n of names) reviewers[n] = mintToken(secret, n, ['reviewer'], ttl);
  return {
    shared: false,
    observer: mintToken(secret, 'k6-observer', ['observer'], ttl),
    submitter: mintToken(secret, 'k6-submitter', ['submitter'], ttl),
    worker: mintToken(secret, 'k6-worker', ['worker'], ttl),
    review_admin: mintToken(secret, 'k6-admin', ['review_admin', 'reviewer'], ttl),
    reviewers,
    // Signed with the wrong key: a deliberate 401.
    bad: mintToken(`${secret}-not-the-key`, 'k6-intruder', ['observer'], ttl),
  };
}

// For setup(): the server answers, is ready, and accepts the tokens.
export function preflight(tokens) {
  const ready = call('GET', '/health/ready', { name: 'GET /health/ready', expect: [200, 503] });
  if (ready.status !== 200) {
    throw new Error(`forgeline at ${BASE_URL} is not ready: HTTP ${ready.status} ${ready.body || ''}`);
  }
  const who = call('GET', '/api/v1/tasks?limit=1', { token: tokens.observer, name: 'GET /api/v1/tasks', expect: [200, 401, 403] });
  if (who.status !== 200) {
    throw new Error(
      `forgeline at ${BASE_URL} refuses the tokens (HTTP ${who.status}): check FORGELINE_JWT_SECRET, ` +
        'JWT_ISSUER / JWT_AUDIENCE (auth.issuer / auth.audience) or TOKEN',
    );
  }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

const callbacks = {};
function expectedCallback(expect) {
  const key = expect.join(',');
  if (!callbacks[key]) callbacks[key] = http.expectedStatuses(...expect);
  return callbacks[key];
}

// One API request. opts: token, body (object, or a string sent as is), expect
// (statuses that are not failures; default 2xx), name (route template tag),
// kind (api | longpoll | stream), headers, timeout, tags.
export function call(method, path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  let body = null;
  if (opts.body !== undefined && opts.body !== null) {
    body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    headers['Content-Type'] = 'application/json';
  }
  const kind = opts.kind || 'api';
  const params = {
    headers,
    tags: Object.assign({ name: opts.name || `${method} ${path.split('?')[0]}`, kind }, opts.tags || {}),
    timeout: opts.timeout || '60s',
  };
  if (opts.expect) params.responseCallback = expectedCallback(opts.expect);
  const res = http.request(method, BASE_URL + path, body, params);
  serverErrors.add(res.status === 0 || res.status >= 500, { kind });
  return res;
}

export function json(res) {
  try {
    return res.json();
  } catch (e) {
    return null;
  }
}

export function errorCode(res) {
  const j = json(res);
  return j && j.error ? j.error.code : null;
}

// ---------------------------------------------------------------------------
// What the server's configuration offers (the scripts cannot read it)
// ---------------------------------------------------------------------------

// Set these to match the server's [[guardrails]] (tests/ops/test_e2e.py sets
// them for tests/ops/forgeline_e2e.toml); unset, the paths that need them
// are skipped.
//   BLOCK_TEXT   text a `block` deny_pattern policy refuses at the input,
//                tool and output stages (e.g. "rm -rf /");
//   FLAG_TOOL    a tool name an allow_tools `flag` policy does not allow;
//   SECRET_FLAG  1: a secret_scan `flag` policy checks the output stage.
export const SERVER = {
  blockText: __ENV.BLOCK_TEXT || '',
  flagTool: __ENV.FLAG_TOOL || '',
  secretFlag: __ENV.SECRET_FLAG === '1',
};

// ---------------------------------------------------------------------------
// Submitting
// ---------------------------------------------------------------------------

let submitSeq = 0;

// A task body. behavior (a label the workers act on): complete, multi, retry,
// dead, fail, expire, review, flag, toolblock, outblock, secret.
export function taskBody(behavior, queue = 'agents', extra = {}) {
  submitSeq += 1;
  const body = {
    queue,
    priority: 3 + (submitSeq % 5),
    labels: { behavior, source: 'k6', project: 'loadtest' },
    payload: {
      repo: 'git@example.com:web.git',
      ref: 'main',
      prompt: `fix issue #${submitSeq}`,
      submitted_ms: Date.now(),
    },
    steps: ['build', 'test'],
    max_attempts: behavior === 'dead' ? 1 : 3,
  };
  if (behavior === 'review') body.review = { required: true };
  return Object.assign(body, extra);
}

// A behavior drawn from a weighted mix: [[behavior, weight], ...].
export function pickBehavior(mix) {
  const total = mix.reduce((a, [, w]) => a + w, 0);
  let x = Math.random() * total;
  for (const [b, w] of mix) {
    x -= w;
    if (x < 0) return b;
  }
  return mix[mix.length - 1][0];
}

// What load, stress and soak submit: mostly clean runs, some retries,
// failures, reviews, multi-agent runs, a few lease expiries and dead-letters.
export const LOAD_MIX = [
  ['complete', 70],
  ['multi', 8],
  ['retry', 8],
  ['fail', 4],
  ['review', 5],
  ['flag', 2],
  ['dead', 2],
  ['expire', 1],
];

export function submit(tokens, body, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const res = call('POST', '/api/v1/tasks', {
    token: tokens.submitter,
    body,
    headers,
    name: 'POST /api/v1/tasks',
    expect: opts.expect,
  });
  if (!opts.expect) {
    check(res, { 'submit: 201 Created': (r) => r.status === 201 });
  }
  return res;
}

// ---------------------------------------------------------------------------
// Worker protocol
// ---------------------------------------------------------------------------

export function lease(tokens, queue, workerId, { max = 1, waitMs = 2000, leaseMs } = {}) {
  const body = { worker_id: workerId, max, wait_ms: waitMs };
  if (leaseMs) body.lease_ms = leaseMs;
  const res = call('POST', `/api/v1/queues/${queue}/lease`, {
    token: tokens.worker,
    body,
    name: 'POST /api/v1/queues/{queue}/lease',
    kind: 'longpoll',
    timeout: `${Math.ceil(waitMs / 1000) + 30}s`,
  });
  check(res, { 'lease: 200': (r) => r.status === 200 });
  const j = json(res);
  return (j && j.leases) || [];
}

function leaseCall(tokens, l, op, body, expect) {
  return call('POST', `/api/v1/leases/${l.lease_id}/${op}`, {
    token: tokens.worker,
    body: Object.assign({ token: l.token }, body),
    name: `POST /api/v1/leases/{lease_id}/${op}`,
    expect,
  });
}

export function heartbeat(tokens, l, leaseMs) {
  const res = leaseCall(tokens, l, 'heartbeat', leaseMs ? { lease_ms: leaseMs } : {});
  check(res, { 'heartbeat: 200': (r) => r.status === 200 });
  return res;
}

export function reportEvents(tokens, l, events, expect) {
  return leaseCall(tokens, l, 'events', { events }, expect);
}

function rand(min, max) {
  return Math.floor(min + Math.random() * (max - min + 1));
}

// The agent and verification events a worker reports for one run, in the
// shapes agents send (snake_case, camelCase, nested event_data).
export function runEvents(behavior, attempt) {
  const ev = [];
  const agents = behavior === 'multi' ? ['planner', 'coder'] : ['coder'];
  agents.forEach((a, i) => ev.push({ type: 'agent_started', agent_name: a, model: 'm-1', attempt_seen: attempt, idx: i }));
  ev.push({
    type: 'toolInvoked',
    toolName: behavior === 'flag' && SERVER.flagTool ? SERVER.flagTool : 'bash',
    agentName: 'coder',
    toolCallId: `c-${attempt}-1`,
    durationMs: rand(1, 40),
  });
  ev.push({ event: 'tool_invoked', event_data: { tool: 'read_file', call_id: `c-${attempt}-2`, duration_ms: rand(1, 10) } });
  const failStep = behavior === 'fail' ? 'test' : null;
  for (const step of ['build', 'test']) {
    ev.push({ event: 'verification_started', event_data: { step } });
    const code = step === failStep ? 1 : 0;
    ev.push({
      type: 'verification_finished',
      step,
      exit_code: code,
      duration_ms: rand(20, 900),
      output: code === 0 ? `${step}: ok` : `${step}: 2 failures`,
    });
  }
  for (const a of agents) ev.push({ type: 'agent_finished', agent: a, status: 'ok' });
  return ev;
}

export function complete(tokens, l, result, expect) {
  return leaseCall(tokens, l, 'complete', result === undefined ? {} : { result }, expect);
}

export function failLease(tokens, l, error, retryable) {
  return leaseCall(tokens, l, 'fail', { error, retryable });
}

// Works one lease the way its task's `behavior` label asks:
// complete/multi/review: report events, complete (review and flag go to
//   awaiting_review); retry: fail retryable on the first attempt;
// dead: fail retryable (max_attempts 1: dead-letter); fail: failing test
//   step, fail non-retryable; expire: let the lease run out on the first
//   attempt, then a late complete is refused (409 stale_lease);
// flag: a tool FLAG_TOOL outside the allowed tools (flag: review);
//   toolblock: a tool call with BLOCK_TEXT, blocked (422), then complete;
//   outblock: a result with BLOCK_TEXT, blocked at the output stage (422,
//   the task fails); secret: a result with a cloud key (a secret_scan flag
//   sends it to review). Without the server policies (SERVER) these run as
//   complete.
export function processLease(tokens, l) {
  const task = l.task || {};
  let behavior = (task.labels || {}).behavior || 'complete';
  if ((behavior === 'toolblock' || behavior === 'outblock') && !SERVER.blockText) behavior = 'complete';
  const attempt = l.attempt || 1;
  const submitted = task.payload && task.payload.submitted_ms;
  if (submitted && attempt === 1) queuePickup.add(Date.now() - submitted);
  tasksProcessed.add(1, { behavior });

  heartbeat(tokens, l, 30000);
  const ev = reportEvents(tokens, l, runEvents(behavior, attempt));
  check(ev, { 'events: 200': (r) => r.status === 200 });

  if (behavior === 'toolblock') {
    const blocked = reportEvents(
      tokens,
      l,
      [{ type: 'tool_invoked', tool: 'bash', agent: 'coder', command: SERVER.blockText }],
      [422],
    );
    check(blocked, {
      'tool-stage guardrail: 422 guardrail_blocked': (r) => r.status === 422 && errorCode(r) === 'guardrail_blocked',
    });
  }

  let res;
  switch (behavior) {
    case 'retry':
      if (attempt === 1) {
        res = failLease(tokens, l, 'database locked', true);
        check(res, { 'fail retryable: scheduled': (r) => r.status === 200 && (json(r) || {}).state === 'scheduled' });
        return;
      }
      break;
    case 'dead':
      res = failLease(tokens, l, 'upstream kept timing out', true);
      check(res, { 'fail retryable, last attempt: dead': (r) => r.status === 200 && (json(r) || {}).state === 'dead' });
      return;
    case 'fail':
      res = failLease(tokens, l, 'test step failed: 2 failures', false);
      check(res, { 'fail non-retryable: failed': (r) => r.status === 200 && (json(r) || {}).state === 'failed' });
      return;
    case 'expire':
      if (attempt === 1) {
        heartbeat(tokens, l, 150);
        sleep(1.2);
        res = complete(tokens, l, { late: true }, [409]);
        check(res, { 'late complete: 409 stale_lease': (r) => r.status === 409 && errorCode(r) === 'stale_lease' });
        return;
      }
      break;
    case 'outblock':
      res = complete(tokens, l, { log: `cleanup: ${SERVER.blockText} done` }, [422]);
      check(res, {
        'output-stage guardrail: 422 guardrail_blocked': (r) => r.status === 422 && errorCode(r) === 'guardrail_blocked',
      });
      return;
    default:
      break;
  }
  const result =
    behavior === 'secret'
      ? { pr: 'https://example.com/pr/1', note: 'used key AKIAIOSFODNN7EXAMPLE' }
      : { pr: `https://example.com/pr/${attempt}`, behavior };
  res = complete(tokens, l, result);
  const wantsReview =
    behavior === 'review' || (behavior === 'flag' && !!SERVER.flagTool) || (behavior === 'secret' && SERVER.secretFlag);
  check(res, {
    'complete: 200': (r) => r.status === 200,
    'complete: completed or awaiting_review': (r) => {
      const s = (json(r) || {}).state;
      return wantsReview ? s === 'awaiting_review' : s === 'completed' || s === 'awaiting_review';
    },
  });
}

// One worker poll: lease up to `max` tasks (long-poll) and work each.
export function workOnce(tokens, queue, workerId, opts = {}) {
  const leases = lease(tokens, queue, workerId, opts);
  for (const l of leases) processLease(tokens, l);
  return leases.length;
}

// ---------------------------------------------------------------------------
// Reviews
// ---------------------------------------------------------------------------

export function listReviews(token, query = 'unassigned=true&limit=20') {
  const res = call('GET', `/api/v1/reviews?${query}`, { token, name: 'GET /api/v1/reviews' });
  check(res, { 'reviews list: 200': (r) => r.status === 200 });
  return ((json(res) || {}).reviews || []);
}

export function claim(token, id, expect = [200, 409]) {
  return call('POST', `/api/v1/reviews/${id}/claim`, { token, name: 'POST /api/v1/reviews/{id}/claim', expect });
}

export function getReview(token, id) {
  const res = call('GET', `/api/v1/reviews/${id}`, { token, name: 'GET /api/v1/reviews/{id}' });
  check(res, { 'review read: 200 with dossier hash': (r) => r.status === 200 && !!((json(r) || {}).dossier || {}).dossier_hash });
  return json(res);
}

export function decide(token, id, outcome, dossierHash, comment, expect) {
  const body = { outcome, dossier_hash: dossierHash };
  if (comment) body.comment = comment;
  return call('POST', `/api/v1/reviews/${id}/decision`, {
    token,
    body,
    name: 'POST /api/v1/reviews/{id}/decision',
    expect,
  });
}

export function pickOutcome() {
  const x = Math.random();
  if (x < 0.6) return 'approved';
  if (x < 0.85) return 'rejected';
  return 'changes_requested';
}

// One reviewer step: take an open ticket (oldest few), claim it, read its
// dossier, decide it bound to the dossier hash. A claim lost to another
// reviewer (409 ticket_held) is expected under concurrency and counted.
// staleFirst: first send a decision with a wrong hash (409 stale_dossier).
// conflictOk: other sessions act on the same tickets (a lead reassigns the
// ticket while we look at it, or another VU acting as the same principal
// decides it first), so a decision refused with 409 ticket_held,
// ticket_closed or already_decided is expected (and counted).
export function reviewOnce(token, reviewer, { queue, outcome, staleFirst = false, listQuery, thinkSeconds = 0, conflictOk = false } = {}) {
  const q = listQuery || `unassigned=true&limit=20${queue ? `&queue=${queue}` : ''}`;
  const open = listReviews(token, q);
  if (open.length === 0) return null;
  const t = open[Math.floor(Math.random() * Math.min(open.length, 5))];
  const c = claim(token, t.id);
  if (c.status === 409) {
    reviewConflicts.add(1, { code: errorCode(c) || 'unknown' });
    return null;
  }
  check(c, { 'claim: 200 claimed': (r) => r.status === 200 && (json(r) || {}).state === 'claimed' });
  const full = getReview(token, t.id);
  if (!full) return null;
  const hash = full.dossier.dossier_hash;
  if (staleFirst) {
    const stale = decide(token, t.id, 'approved', '0'.repeat(64), null, [409]);
    check(stale, {
      'decision on a stale dossier: 409 stale_dossier': (r) =>
        r.status === 409 && (errorCode(r) === 'stale_dossier' || (conflictOk && errorCode(r) === 'ticket_held')),
    });
  }
  if (thinkSeconds > 0) sleep(thinkSeconds);
  const o = outcome || pickOutcome();
  const d = decide(token, t.id, o, hash, o === 'approved' ? null : `k6 ${o}: please look at the test step`, conflictOk ? [200, 409] : undefined);
  if (conflictOk && d.status === 409 && ['ticket_held', 'ticket_closed', 'already_decided'].includes(errorCode(d))) {
    reviewConflicts.add(1, { code: errorCode(d) });
    return null;
  }
  check(d, { 'decision: 200': (r) => r.status === 200 });
  if (d.status === 200) {
    reviewDecisions.add(1, { outcome: o });
    const opened = Date.parse(t.created_at);
    if (!Number.isNaN(opened)) reviewDecisionLatency.add(Math.max(0, Date.now() - opened), { outcome: o });
  }
  return { id: t.id, outcome: o };
}

// ---------------------------------------------------------------------------
// Streams (SSE)
// ---------------------------------------------------------------------------

// The events of an SSE body: [{event, id, data}] (blank-line separated
// frames; `:` keep-alive comments skipped).
export function parseSse(body) {
  const out = [];
  let cur = null;
  for (const line of String(body || '').split('\n')) {
    if (line === '' || line === '\r') {
      if (cur && cur.event) out.push(cur);
      cur = null;
      continue;
    }
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/\r$/, '');
    cur = cur || {};
    if (field === 'event') cur.event = value;
    else if (field === 'id') cur.id = value;
    else if (field === 'data') cur.data = cur.data === undefined ? value : `${cur.data}\n${value}`;
  }
  if (cur && cur.event) out.push(cur);
  return out;
}

// The number of `event:` lines (what a client counts as events).
export function countEvents(body) {
  let n = 0;
  for (const line of String(body || '').split('\n')) if (line.startsWith('event:')) n += 1;
  return n;
}

// A bounded stream: GET path?max_events=N&idle_timeout=T. Returns {res,
// events}. Tagged kind:stream (outside the latency threshold).
export function readStream(token, path, { maxEvents = 10, idleTimeout = '3s', lastEventId, name, timeout = '60s', tags = {} } = {}) {
  const sep = path.includes('?') ? '&' : '?';
  const url = `${path}${sep}max_events=${maxEvents}&idle_timeout=${idleTimeout}`;
  const headers = {};
  if (lastEventId) headers['Last-Event-ID'] = lastEventId;
  const tag = name || `GET ${path.split('?')[0]}`;
  const res = call('GET', url, { token, name: tag, kind: 'stream', headers, timeout, tags });
  const n = res.status === 200 ? countEvents(res.body) : 0;
  sseEvents.add(n, Object.assign({ name: tag }, tags));
  return { res, count: n, events: res.status === 200 ? parseSse(res.body) : [] };
}

// Time to first event: a stream bounded at one event; the request lasts
// until that event has arrived (the server ends the stream right after it).
// Tag replay:'true' when the event is already stored (a replay from the
// start), replay:'false' for a live wait after Last-Event-ID.
export function timeToFirstEvent(token, path, { idleTimeout = '10s', lastEventId, name, tags } = {}) {
  const t = Object.assign({ replay: lastEventId ? 'false' : 'true' }, tags || {});
  const s = readStream(token, path, { maxEvents: 1, idleTimeout, lastEventId, name, tags: t });
  if (s.count >= 1) sseTimeToFirstEvent.add(s.res.timings.duration, Object.assign({ name: name || path.split('?')[0] }, t));
  return s;
}

// The id of the newest event the caller can see, from a recent task (a
// resume point for a live firehose read), or null.
export function latestEventId(token) {
  const list = call('GET', '/api/v1/tasks?limit=1', { token, name: 'GET /api/v1/tasks' });
  const tasks = (json(list) || {}).tasks || [];
  if (!tasks.length) return null;
  const t = call('GET', `/api/v1/tasks/${tasks[0].id}?events=1`, { token, name: 'GET /api/v1/tasks/{id}' });
  const ev = (json(t) || {}).events || [];
  return ev.length ? ev[ev.length - 1].id : null;
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

// A round of the reads a dashboard user or a CLI makes.
export function readRound(tokens, queue = 'agents') {
  const list = call('GET', `/api/v1/tasks?queue=${queue}&limit=20`, { token: tokens.observer, name: 'GET /api/v1/tasks' });
  check(list, { 'list tasks: 200': (r) => r.status === 200 });
  const tasks = (json(list) || {}).tasks || [];
  if (tasks.length) {
    const pick = tasks[Math.floor(Math.random() * tasks.length)];
    const one = call('GET', `/api/v1/tasks/${pick.id}?events=50`, { token: tokens.observer, name: 'GET /api/v1/tasks/{id}' });
    check(one, { 'get task: 200': (r) => r.status === 200 });
    const runs = (json(one) || {}).runs || [];
    if (runs.length) {
      const run = call('GET', `/api/v1/runs/${runs[runs.length - 1].id}`, { token: tokens.observer, name: 'GET /api/v1/runs/{run_id}' });
      check(run, { 'get run: 200': (r) => r.status === 200 });
    }
  }
  return tasks;
}
