// forgeline review gate test: reviewers claiming and deciding tickets while
// tasks keep arriving at the gate.
//
//   producer   submits tasks with review.required (10 % need two approvals)
//              to QUEUE at REVIEW_RATE;
//   workers    work them through the worker protocol (their completions
//              open the tickets);
//   reviewers  as many VUs as REVIEWERS names, acting as those principals
//              in turn (each name is its own principal): list
//              open tickets of QUEUE, claim one (a claim lost to another
//              reviewer, 409 ticket_held, is expected and counted in
//              review_conflicts), read the dossier, think for
//              THINK seconds, decide approved / rejected / changes_requested
//              with the dossier hash; now and then release a claim instead,
//              or send a stale hash first (409 stale_dossier).
//   leads      a review_admin assigns the oldest open ticket to a reviewer
//              from time to time; the assignee decides it.
//
// review_decision_latency (ticket opened -> decision, as k6 sees
// it) is what forgeline_review_decision_latency_seconds shows on the
// reviews dashboard; there is no fixed SLO (review SLA targets are per queue
// in the server config), so set REVIEW_SLA (seconds) to hold p(99) to yours.
//
//   k6 run -e BASE_URL=http://127.0.0.1:7878 -e FORGELINE_JWT_SECRET=... loadtest/review.js
//
// Env (defaults): DURATION (2m), REVIEW_RATE (2 tasks/s), QUEUE
// (review-k6), REVIEWERS (alice,bob,carol,dave), THINK (0.2 s), WORKERS (2),
// REVIEW_SLA (none), plus BASE_URL, FORGELINE_JWT_SECRET or TOKEN,
// JWT_ISSUER, JWT_AUDIENCE, SUMMARY, ALLOW_REMOTE. With TOKEN every reviewer
// is the same principal, so N-of-M tickets stop after the first approval.

import { check, sleep } from 'k6';
import exec from 'k6/execution';
import {
  SUMMARY_TREND_STATS,
  call,
  claim,
  decide,
  envNum,
  envStr,
  errorCode,
  getReview,
  json,
  listReviews,
  preflight,
  reviewConflicts,
  reviewDecisions,
  reviewOnce,
  reviewerNames,
  setupTokens,
  sloThresholds,
  submit,
  taskBody,
  workOnce,
} from './lib/forgeline.js';
import { summaryHandler } from './lib/summary.js';

const DURATION = envStr('DURATION', '2m');
const QUEUE = envStr('QUEUE', 'review-k6');
const THINK = envNum('THINK', 0.2);
if (!__ENV.REVIEWERS) __ENV.REVIEWERS = 'alice,bob,carol,dave';
const REVIEWERS = reviewerNames();

const extra = { review_decisions: ['count>0'] };
if (__ENV.REVIEW_SLA) extra.review_decision_latency = [`p(99)<${envNum('REVIEW_SLA', 0) * 1000}`];

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '30s',
  scenarios: {
    producer: {
      executor: 'constant-arrival-rate',
      exec: 'produce',
      rate: Math.max(1, Math.round(envNum('REVIEW_RATE', 2) * 60)),
      timeUnit: '1m',
      duration: DURATION,
      preAllocatedVUs: 2,
      maxVUs: 10,
    },
    workers: { executor: 'constant-vus', exec: 'worker', vus: envNum('WORKERS', 2), duration: DURATION, gracefulStop: '20s' },
    reviewers: {
      executor: 'constant-vus',
      exec: 'reviewer',
      vus: REVIEWERS.length,
      startTime: '3s',
      duration: DURATION,
      gracefulStop: '20s',
    },
    leads: {
      executor: 'constant-arrival-rate',
      exec: 'lead',
      rate: 6,
      timeUnit: '1m',
      startTime: '5s',
      duration: DURATION,
      preAllocatedVUs: 1,
      maxVUs: 2,
    },
  },
  thresholds: sloThresholds({ extra }),
};

export function setup() {
  const tokens = setupTokens(4 * 3600);
  preflight(tokens);
  return tokens;
}

export function produce(tokens) {
  const twoOfM = exec.scenario.iterationInTest % 10 === 0;
  const body = taskBody('review', QUEUE, { review: { required: true, required_approvals: twoOfM ? 2 : 0 } });
  submit(tokens, body);
}

export function worker(tokens) {
  workOnce(tokens, QUEUE, `k6-review-${exec.vu.idInTest}`, { max: 10, waitMs: 3000 });
}

export function reviewer(tokens) {
  // The reviewer VUs act as the REVIEWERS principals in turn.
  const name = REVIEWERS[exec.scenario.iterationInTest % REVIEWERS.length];
  const token = tokens.reviewers[name];
  const i = exec.scenario.iterationInTest;

  // Tickets assigned to me (by a lead) come first.
  const mine = listReviews(token, `mine=true&queue=${QUEUE}&limit=5`).filter((t) => t.holder === name);
  if (mine.length) {
    const t = mine[0];
    const full = getReview(token, t.id);
    if (full) {
      sleep(THINK);
      const d = decide(token, t.id, 'approved', full.dossier.dossier_hash, 'assigned to me: fine', [200, 409]);
      // Another VU acting as the same reviewer may have decided it first,
      // or a lead moved it: a conflict, not a failure.
      const conflict = d.status === 409 && ['already_decided', 'ticket_closed', 'ticket_held'].includes(errorCode(d));
      if (conflict) reviewConflicts.add(1, { code: errorCode(d) });
      check(d, { 'decision on an assigned ticket: 200 (or a 409 conflict)': (r) => r.status === 200 || conflict });
      if (d.status === 200) reviewDecisions.add(1, { outcome: 'approved' });
    }
    return;
  }

  if (i % 20 === 7) {
    // Claim, then give it back.
    const open = listReviews(token, `unassigned=true&queue=${QUEUE}&limit=5`);
    if (open.length) {
      const c = claim(token, open[0].id);
      if (c.status === 200) {
        const rel = call('POST', `/api/v1/reviews/${open[0].id}/release`, { token, name: 'POST /api/v1/reviews/{id}/release' });
        check(rel, { 'release: 200 open': (r) => r.status === 200 && (json(r) || {}).state === 'open' });
      } else {
        reviewConflicts.add(1, { code: errorCode(c) || 'unknown' });
      }
    }
    return;
  }

  const r = reviewOnce(token, name, { queue: QUEUE, staleFirst: i % 10 === 3, thinkSeconds: THINK, conflictOk: true });
  if (!r) sleep(0.5);
}

export function lead(tokens) {
  const admin = tokens.review_admin;
  const open = listReviews(admin, `unassigned=true&queue=${QUEUE}&limit=1`);
  if (!open.length) return;
  const to = REVIEWERS[exec.scenario.iterationInTest % REVIEWERS.length];
  const a = call('POST', `/api/v1/reviews/${open[0].id}/assign`, {
    token: admin,
    body: { reviewer: to },
    name: 'POST /api/v1/reviews/{id}/assign',
    expect: [200, 409],
  });
  check(a, {
    'assign: 200 assigned (or 409: decided meanwhile, or the reviewer voted already)': (r) =>
      (r.status === 200 && (json(r) || {}).holder === to) || ['ticket_closed', 'already_decided'].includes(errorCode(r)),
  });
}

export const handleSummary = summaryHandler('review');
