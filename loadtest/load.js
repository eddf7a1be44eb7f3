// forgeline load test: submits at a constant arrival rate (the SLO rate,
// default 50 tasks/s) for DURATION (default 5m), with external workers
// draining the queue through the worker protocol, readers, bounded streams
// and reviewers. Passes when the SLO thresholds hold at that rate.
//
//   k6 run -e BASE_URL=http://127.0.0.1:7878 -e FORGELINE_JWT_SECRET=... loadtest/load.js
//   k6 run -e RATE=100 -e DURATION=10m ... loadtest/load.js
//
// Env (defaults): RATE (50 submits/s), DURATION (5m), QUEUE (agents),
// WORKERS (8 worker VUs), BATCH (10 tasks per lease), READ_RATE (10/s),
// STREAM_RATE (1/s), REVIEWERS (alice,bob: one VU each), MAX_VUS (200),
// plus BASE_URL, FORGELINE_JWT_SECRET or TOKEN, JWT_ISSUER, JWT_AUDIENCE,
// SUMMARY, ALLOW_REMOTE.
//
// Use a queue that the built-in executor does not serve (executor.queues):
// the tasks name steps `build` and `test`, which the k6 workers report.

import { check, sleep } from 'k6';
import exec from 'k6/execution';
import {
  LOAD_MIX,
  SLO,
  SUMMARY_TREND_STATS,
  envNum,
  envStr,
  latestEventId,
  pickBehavior,
  preflight,
  readRound,
  readStream,
  reviewOnce,
  reviewerNames,
  setupTokens,
  sloThresholds,
  submit,
  taskBody,
  workOnce,
} from './lib/forgeline.js';
import { summaryHandler } from './lib/summary.js';

const RATE = envNum('RATE', 50);
const DURATION = envStr('DURATION', '5m');
const QUEUE = envStr('QUEUE', 'agents');
const WORKERS = envNum('WORKERS', 8);
const BATCH = envNum('BATCH', 10);
const READ_RATE = envNum('READ_RATE', 10);
const STREAM_RATE = envNum('STREAM_RATE', 1);
const REVIEWERS = reviewerNames();

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '30s',
  scenarios: {
    submit: {
      executor: 'constant-arrival-rate',
      exec: 'submitTask',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.max(4, Math.ceil(RATE / 10)),
      maxVUs: envNum('MAX_VUS', 200),
    },
    workers: { executor: 'constant-vus', exec: 'worker', vus: WORKERS, duration: DURATION, gracefulStop: '30s' },
    readers: {
      executor: 'constant-arrival-rate',
      exec: 'reader',
      rate: READ_RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.max(2, Math.ceil(READ_RATE / 5)),
      maxVUs: 50,
    },
    streams: {
      executor: 'constant-arrival-rate',
      exec: 'stream',
      rate: STREAM_RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: 2,
      maxVUs: 20,
    },
    reviewers: { executor: 'constant-vus', exec: 'reviewer', vus: REVIEWERS.length, duration: DURATION, gracefulStop: '10s' },
  },
  thresholds: sloThresholds({
    extra: {
      // Queue wait SLO: 99 % of leases within 30 s of the task becoming
      // eligible (measured here from submit to the worker's lease).
      task_pickup: [`p(99)<${SLO.queueWaitP99Ms}`],
    },
  }),
};

export function setup() {
  const tokens = setupTokens(4 * 3600);
  preflight(tokens);
  return tokens;
}

export function submitTask(tokens) {
  const res = submit(tokens, taskBody(pickBehavior(LOAD_MIX), QUEUE));
  check(res, { 'submit: has an id': (r) => r.status === 201 && !!r.json('id') });
}

export function worker(tokens) {
  workOnce(tokens, QUEUE, `k6-load-${exec.vu.idInTest}`, { max: BATCH, waitMs: 5000 });
}

export function reader(tokens) {
  readRound(tokens, QUEUE);
}

export function stream(tokens) {
  const last = latestEventId(tokens.observer);
  const s = readStream(tokens.observer, `/api/v1/events?queue=${QUEUE}`, {
    maxEvents: 20,
    idleTimeout: '5s',
    lastEventId: last,
    name: 'GET /api/v1/events',
  });
  check(s.res, { 'live firehose: 200': (r) => r.status === 200 });
}

export function reviewer(tokens) {
  const name = REVIEWERS[exec.scenario.iterationInTest % REVIEWERS.length];
  const r = reviewOnce(tokens.reviewers[name], name, { queue: QUEUE });
  if (!r) sleep(1);
}

export const handleSummary = summaryHandler('load');
