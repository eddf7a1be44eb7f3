// forgeline stress test: raises the submit rate step by step
// (ramping-arrival-rate) until the SLO thresholds break, then stops (the
// availability and latency thresholds abort the run 10 s after they first
// fail). Bounded: the stages end after RAMP + HOLD + 30 s at most. The
// summary shows how far it got: stress_target_rate (max) is the
// submit rate the ramp had reached, and k6 exits 99 when a threshold failed,
// i.e. when the server broke its SLO below PEAK_RATE.
//
//   k6 run -e BASE_URL=http://127.0.0.1:7878 -e FORGELINE_JWT_SECRET=... loadtest/stress.js
//   k6 run -e PEAK_RATE=2000 -e RAMP=10m ... loadtest/stress.js
//
// Env (defaults): START_RATE (10/s), PEAK_RATE (500/s), STEPS (5 equal
// steps), RAMP (5m in total), HOLD (1m at the peak), QUEUE (agents),
// WORKERS (16), BATCH (20), MAX_VUS (500), plus BASE_URL,
// FORGELINE_JWT_SECRET or TOKEN, JWT_ISSUER, JWT_AUDIENCE, SUMMARY,
// ALLOW_REMOTE.

import { check } from 'k6';
import exec from 'k6/execution';
import { Gauge } from 'k6/metrics';
import {
  LOAD_MIX,
  SLO,
  SUMMARY_TREND_STATS,
  durationSeconds,
  envNum,
  envStr,
  pickBehavior,
  preflight,
  readRound,
  setupTokens,
  sloThresholds,
  submit,
  taskBody,
  workOnce,
} from './lib/forgeline.js';
import { summaryHandler } from './lib/summary.js';

const START_RATE = envNum('START_RATE', 10);
const PEAK_RATE = envNum('PEAK_RATE', 500);
const STEPS = Math.max(1, envNum('STEPS', 5));
const QUEUE = envStr('QUEUE', 'agents');

const RAMP_S = durationSeconds(envStr('RAMP', '5m'));
const HOLD = envStr('HOLD', '1m');

// Each step: ramp to the next rate over a third of the step, hold it for the
// rest, so every level is measured at a steady rate.
function stages() {
  const out = [];
  const step = RAMP_S / STEPS;
  for (let i = 1; i <= STEPS; i++) {
    const target = Math.round(START_RATE + ((PEAK_RATE - START_RATE) * i) / STEPS);
    out.push({ target, duration: `${Math.max(1, Math.round(step / 3))}s` });
    out.push({ target, duration: `${Math.max(1, Math.round((2 * step) / 3))}s` });
  }
  out.push({ target: PEAK_RATE, duration: HOLD });
  out.push({ target: 0, duration: '30s' });
  return out;
}

const STAGES = stages();

// The submit rate the ramp asks for at `ms` into the run (linear within a
// stage, as ramping-arrival-rate does).
function targetAt(ms) {
  let t = 0;
  let from = START_RATE;
  for (const st of STAGES) {
    const d = durationSeconds(st.duration) * 1000;
    if (ms < t + d) return from + ((st.target - from) * (ms - t)) / d;
    t += d;
    from = st.target;
  }
  return from;
}

// The last and highest rate reached: when a threshold aborts the run, max is
// about where the server stopped meeting its SLO.
const targetRate = new Gauge('stress_target_rate');

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '30s',
  scenarios: {
    submit: {
      executor: 'ramping-arrival-rate',
      exec: 'submitTask',
      startRate: START_RATE,
      timeUnit: '1s',
      stages: STAGES,
      preAllocatedVUs: 20,
      maxVUs: envNum('MAX_VUS', 500),
    },
    workers: {
      executor: 'constant-vus',
      exec: 'worker',
      vus: envNum('WORKERS', 16),
      duration: `${Math.ceil(RAMP_S + durationSeconds(HOLD) + 30)}s`,
      gracefulStop: '30s',
    },
    readers: {
      executor: 'constant-arrival-rate',
      exec: 'reader',
      rate: envNum('READ_RATE', 10),
      timeUnit: '1s',
      duration: `${Math.ceil(RAMP_S + durationSeconds(HOLD) + 30)}s`,
      preAllocatedVUs: 4,
      maxVUs: 50,
    },
  },
  thresholds: sloThresholds({
    abort: true,
    extra: {
      task_pickup: [{ threshold: `p(99)<${SLO.queueWaitP99Ms}`, abortOnFail: true, delayAbortEval: '30s' }],
    },
  }),
};

export function setup() {
  const tokens = setupTokens(4 * 3600);
  preflight(tokens);
  return tokens;
}

export function submitTask(tokens) {
  targetRate.add(targetAt(exec.instance.currentTestRunDuration));
  const res = submit(tokens, taskBody(pickBehavior(LOAD_MIX), QUEUE));
  check(res, { 'submit: has an id': (r) => r.status === 201 && !!r.json('id') });
}

export function worker(tokens) {
  workOnce(tokens, QUEUE, `k6-stress-${exec.vu.idInTest}`, { max: envNum('BATCH', 20), waitMs: 5000 });
}

export function reader(tokens) {
  readRound(tokens, QUEUE);
}

export const handleSummary = summaryHandler('stress');
