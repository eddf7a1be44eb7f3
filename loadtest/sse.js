// forgeline streaming test: many clients reading bounded server-sent event
// streams while tasks flow. k6 has no SSE client, so every read is a plain
// GET bounded by ?max_events=N (and idle_timeout); the script counts the
// `event:` lines itself.
//
// Per subscriber iteration:
//   - time to first event, replayed: a recent task's stream with
//     max_events=1 (the stored first event comes back at once);
//   - time to first event, live: the firehose resumed at the newest event id
//     (Last-Event-ID) with max_events=1, i.e. the wait for the next event;
//   - a live firehose read of MAX_EVENTS events; ids must increase, with no
//     duplicate;
//   - a task stream followed until the task ends.
// Stream requests are tagged kind:stream and stay out of the HTTP latency
// threshold (the SLO excludes the streaming routes too); time to first event
// is the custom trend sse_time_to_first_event. A replayed event is
// held to the latency SLO (p(99) < 250 ms); a live one depends on how often
// events happen and only has to arrive.
//
//   k6 run -e BASE_URL=http://127.0.0.1:7878 -e FORGELINE_JWT_SECRET=... loadtest/sse.js
//
// Env (defaults): SUBSCRIBERS (20 VUs), DURATION (1m), MAX_EVENTS (50),
// PRODUCE_RATE (10 tasks/s), QUEUE (agents), WORKERS (2), plus BASE_URL,
// FORGELINE_JWT_SECRET or TOKEN, JWT_ISSUER, JWT_AUDIENCE, SUMMARY,
// ALLOW_REMOTE.

import { check } from 'k6';
import exec from 'k6/execution';
import {
  SLO,
  SUMMARY_TREND_STATS,
  call,
  durationSeconds,
  envNum,
  envStr,
  json,
  latestEventId,
  preflight,
  readStream,
  setupTokens,
  sloThresholds,
  submit,
  taskBody,
  timeToFirstEvent,
  workOnce,
} from './lib/forgeline.js';
import { summaryHandler } from './lib/summary.js';

const DURATION = envStr('DURATION', '1m');
// Producers and workers keep going 20 s past the subscribers, so a live read
// near the end still gets its events.
const PRODUCE_FOR = `${Math.ceil(durationSeconds(DURATION)) + 20}s`;
const MAX_EVENTS = envNum('MAX_EVENTS', 50);
const QUEUE = envStr('QUEUE', 'agents');

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '30s',
  scenarios: {
    producer: {
      executor: 'constant-arrival-rate',
      exec: 'produce',
      rate: envNum('PRODUCE_RATE', 10),
      timeUnit: '1s',
      duration: PRODUCE_FOR,
      preAllocatedVUs: 2,
      maxVUs: 20,
    },
    workers: { executor: 'constant-vus', exec: 'worker', vus: envNum('WORKERS', 2), duration: PRODUCE_FOR, gracefulStop: '20s' },
    subscribers: {
      executor: 'constant-vus',
      exec: 'subscribe',
      vus: envNum('SUBSCRIBERS', 20),
      startTime: '2s',
      duration: DURATION,
      gracefulStop: '15s',
    },
  },
  thresholds: sloThresholds({
    extra: {
      'sse_time_to_first_event{replay:true}': [`p(99)<${SLO.latencyP99Ms}`],
      'sse_time_to_first_event{replay:false}': ['max>0'],
      sse_events: ['count>0'],
      // Streams must work (no 5xx, no refused stream) even though they are
      // outside the latency threshold.
      'http_req_failed{kind:stream}': [`rate<${SLO.errorBudget}`],
    },
  }),
};

export function setup() {
  const tokens = setupTokens(4 * 3600);
  preflight(tokens);
  return tokens;
}

export function produce(tokens) {
  submit(tokens, taskBody(exec.scenario.iterationInTest % 10 === 0 ? 'multi' : 'complete', QUEUE));
}

export function worker(tokens) {
  workOnce(tokens, QUEUE, `k6-sse-${exec.vu.idInTest}`, { max: 10, waitMs: 3000 });
}

function recentTaskId(tokens) {
  const r = call('GET', `/api/v1/tasks?queue=${QUEUE}&limit=10`, { token: tokens.observer, name: 'GET /api/v1/tasks' });
  const tasks = (json(r) || {}).tasks || [];
  return tasks.length ? tasks[Math.floor(Math.random() * tasks.length)].id : null;
}

export function subscribe(tokens) {
  const obs = tokens.observer;
  const id = recentTaskId(tokens);
  if (id) {
    const first = timeToFirstEvent(obs, `/api/v1/tasks/${id}/events`, {
      name: 'GET /api/v1/tasks/{id}/events',
      tags: { replay: 'true' },
    });
    check(first.res, { 'replayed first event: task_submitted': () => (first.events[0] || {}).event === 'task_submitted' });
  }

  const last = latestEventId(obs);
  const live = timeToFirstEvent(obs, `/api/v1/events?queue=${QUEUE}`, {
    lastEventId: last,
    name: 'GET /api/v1/events',
    tags: { replay: 'false' },
  });
  check(live.res, { 'live first event: newer than the resume point': () => live.count === 1 && (!last || live.events[0].id > last) });

  const s = readStream(obs, `/api/v1/events?queue=${QUEUE}`, {
    maxEvents: MAX_EVENTS,
    idleTimeout: '5s',
    lastEventId: live.events.length ? live.events[0].id : last,
    name: 'GET /api/v1/events',
  });
  check(s.res, {
    'firehose: 200, MAX_EVENTS events': (r) => r.status === 200 && s.count === MAX_EVENTS,
    'firehose: ids increase, no duplicate': () => s.events.every((e, i) => i === 0 || e.id > s.events[i - 1].id),
  });

  if (id) {
    const t = readStream(obs, `/api/v1/tasks/${id}/events`, { maxEvents: 200, idleTimeout: '10s', name: 'GET /api/v1/tasks/{id}/events' });
    check(t.res, { 'task stream: 200 with events': (r) => r.status === 200 && t.count >= 1 });
  }
}

export const handleSummary = summaryHandler('sse');
