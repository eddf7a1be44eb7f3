// forgeline soak test: a steady, moderate load for a long time (DURATION,
// default 30m) with every kind of client at once: submitters, workers,
// readers, bounded streams, reviewers. It finds what only time shows: leaks
// (watch process_resident_memory_bytes and process_open_fds on the overview
// dashboard), a growing store, latency that creeps up as the store fills, a
// backlog that never drains. Thresholds are the SLOs over the whole run.
//
//   k6 run -e BASE_URL=http://127.0.0.1:7878 -e FORGELINE_JWT_SECRET=... loadtest/soak.js
//   k6 run -e DURATION=4h -e RATE=30 ... loadtest/soak.js
//
// Env (defaults): DURATION (30m), RATE (20 submits/s), QUEUE (agents),
// WORKERS (4), BATCH (10), READ_RATE (5/s), STREAM_RATE (0.5/s),
// REVIEWERS (alice,bob), plus BASE_URL, FORGELINE_JWT_SECRET or TOKEN,
// JWT_ISSUER, JWT_AUDIENCE, SUMMARY, ALLOW_REMOTE. Tokens are minted for
// the run's length plus an hour (or TOKEN_TTL seconds).

import { check, sleep } from 'k6';
import exec from 'k6/execution';
import {
  LOAD_MIX,
  SLO,
  SUMMARY_TREND_STATS,
  durationSeconds,
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
  timeToFirstEvent,
  workOnce,
} from './lib/forgeline.js';
import { summaryHandler } from './lib/summary.js';

const DURATION = envStr('DURATION', '30m');
const RATE = envNum('RATE', 20);
const QUEUE = envStr('QUEUE', 'agents');
const STREAM_RATE = envNum('STREAM_RATE', 0.5);
const REVIEWERS = reviewerNames();

// arrival rates below 1/s: express per minute
function perTimeUnit(rate) {
  return rate >= 1 ? { rate: Math.round(rate), timeUnit: '1s' } : { rate: Math.max(1, Math.round(rate * 60)), timeUnit: '1m' };
}

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '30s',
  scenarios: {
    submit: Object.assign(
      {
        executor: 'constant-arrival-rate',
        exec: 'submitTask',
        duration: DURATION,
        preAllocatedVUs: Math.max(2, Math.ceil(RATE / 10)),
        maxVUs: 100,
      },
      perTimeUnit(RATE),
    ),
    workers: { executor: 'constant-vus', exec: 'worker', vus: envNum('WORKERS', 4), duration: DURATION, gracefulStop: '30s' },
    readers: Object.assign(
      {
        executor: 'constant-arrival-rate',
        exec: 'reader',
        duration: DURATION,
        preAllocatedVUs: 2,
        maxVUs: 20,
      },
      perTimeUnit(envNum('READ_RATE', 5)),
    ),
    streams: Object.assign(
      {
        executor: 'constant-arrival-rate',
        exec: 'stream',
        duration: DURATION,
        preAllocatedVUs: 2,
        maxVUs: 10,
      },
      perTimeUnit(STREAM_RATE),
    ),
    reviewers: { executor: 'constant-vus', exec: 'reviewer', vus: REVIEWERS.length, duration: DURATION, gracefulStop: '10s' },
  },
  thresholds: sloThresholds({
    extra: {
      task_pickup: [`p(99)<${SLO.queueWaitP99Ms}`],
    },
  }),
};

export function setup() {
  const tokens = setupTokens(Math.ceil(durationSeconds(DURATION)) + 3600);
  preflight(tokens);
  return tokens;
}

export function submitTask(tokens) {
  const res = submit(tokens, taskBody(pickBehavior(LOAD_MIX), QUEUE));
  check(res, { 'submit: has an id': (r) => r.status === 201 && !!r.json('id') });
}

export function worker(tokens) {
  workOnce(tokens, QUEUE, `k6-soak-${exec.vu.idInTest}`, { max: envNum('BATCH', 10), waitMs: 5000 });
}

export function reader(tokens) {
  readRound(tokens, QUEUE);
}

export function stream(tokens) {
  if (exec.scenario.iterationInTest % 2 === 0) {
    const s = timeToFirstEvent(tokens.observer, `/api/v1/events?queue=${QUEUE}`, {
      lastEventId: latestEventId(tokens.observer),
      name: 'GET /api/v1/events',
    });
    check(s.res, { 'live firehose: 200': (r) => r.status === 200 });
  } else {
    const s = readStream(tokens.observer, `/api/v1/events?queue=${QUEUE}`, {
      maxEvents: 100,
      idleTimeout: '5s',
      lastEventId: latestEventId(tokens.observer),
      name: 'GET /api/v1/events',
    });
    check(s.res, { 'live firehose: 200': (r) => r.status === 200 });
  }
}

export function reviewer(tokens) {
  const name = REVIEWERS[exec.scenario.iterationInTest % REVIEWERS.length];
  const r = reviewOnce(tokens.reviewers[name], name, { queue: QUEUE, thinkSeconds: 0.5 });
  if (!r) sleep(2);
}

export const handleSummary = summaryHandler('soak');
