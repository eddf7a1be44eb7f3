//! The key layout of the `pipeline` tree: one byte of prefix per family, then
//! big-endian fields so that sled's byte order is the order we need.
//!
//! | prefix | key                                                    | value        |
//! |--------|--------------------------------------------------------|--------------|
//! | `T`    | task id                                                | TaskRecord   |
//! | `R`    | run id                                                 | RunRecord    |
//! | `Q`    | queue, 0x00, 9 − priority, eligible_at (BE u64), task id | — (ready index) |
//! | `S`    | eligible_at, task id                                   | queue name (scheduled index) |
//! | `L`    | lease id                                               | LeaseRecord  |
//! | `D`    | deadline, lease id                                     | — (lease deadlines) |
//! | `E`    | event id (BE u64)                                      | EventRecord  |
//! | `X`    | task id, event id                                      | — (events of one task) |
//! | `I`    | principal, 0x00, idempotency key                       | IdempotencyRecord |
//! | `Z`    | state code, task id                                    | — (tasks by state) |
//! | `C`    | state code, queue                                      | u64 count    |
//! | `W`    | worker id                                              | WorkerRecord |
//! | `F`    | (single key)                                           | last fencing token (u64) |
//! | `A`    | audit seq (BE u64)                                     | AuditRecord  |
//! | `V`    | ticket id                                              | Ticket       |
//! | `K`    | task id, ticket id                                     | — (tickets of a task) |
//! | `P`    | ticket id                                              | — (pending tickets) |
//! | `O`    | closed_at, ticket id                                   | — (closed tickets by time) |
//! | `G`    | task id, decision seq (BE u64)                         | StoredDecision (guardrails) |
//! | `aH`, `aA`, `aK` | (single keys)                                | audit chain head, anchor, seal |
//! | `rT`, `rE` | (single keys)                                      | highest task id / event id removed by retention |
//!
//! Leasing reads the first key under `Q queue 0x00`, the reaper and the
//! scheduler read the first keys under `D` and `S`: all O(log n), whatever the
//! backlog.

/// Id length in keys (ULIDs, big-endian so they sort by creation time).
pub const ID_LEN: usize = 16;

/// `T task-id` → `TaskRecord`: the task itself.
pub const TASK: u8 = b'T';
/// `R run-id` → `RunRecord`: one attempt, kept after the task ends.
pub const RUN: u8 = b'R';
/// `Q queue 0x00 (9 − priority) eligible_at task-id` → empty: what leasing
/// reads first is the next task to hand out.
pub const READY: u8 = b'Q';
/// Scheduled (delayed or backing-off) index.
pub const SCHEDULED: u8 = b'S';
/// `L lease-id` → `LeaseRecord`, kept after the lease ends so that late
/// calls are told it ended.
pub const LEASE: u8 = b'L';
/// Lease deadline index.
pub const DEADLINE: u8 = b'D';
/// Events by global id.
pub const EVENT: u8 = b'E';
/// Events by task.
pub const TASK_EVENT: u8 = b'X';
/// `I principal 0x00 key` → `IdempotencyRecord`: keys are scoped per
/// principal, so two callers cannot collide.
pub const IDEMPOTENCY: u8 = b'I';
/// Tasks by state.
pub const STATE: u8 = b'Z';
/// Task counts by state and queue.
pub const COUNT: u8 = b'C';
/// Worker status projection.
pub const WORKER: u8 = b'W';
/// The fencing-token sequence (a single key).
pub const FENCE: &[u8] = b"F";
/// `A seq` → `AuditRecord`, seq big-endian so the chain reads in order.
pub const AUDIT: u8 = b'A';
/// `V ticket-id` → `Ticket`.
pub const TICKET: u8 = b'V';
/// Tickets of a task.
pub const TASK_TICKET: u8 = b'K';
/// `P ticket-id` → empty: open, claimed or assigned tickets, the set the
/// review clock walks.
pub const PENDING_TICKET: u8 = b'P';
/// Closed tickets by time.
pub const CLOSED_TICKET: u8 = b'O';
/// `G task-id seq` → `StoredDecision`: a task's flags and blocks, in order.
pub const GUARDRAIL: u8 = b'G';
/// The guardrail decision sequence (a single key).
pub const GUARDRAIL_SEQ: &[u8] = b"gS";

/// `V id`
pub fn ticket(id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(TICKET, ID_LEN);
    k.extend_from_slice(id);
    k
}

/// `K task` — prefix of a task's tickets.
pub fn task_tickets_prefix(task: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(TASK_TICKET, 2 * ID_LEN);
    k.extend_from_slice(task);
    k
}

/// `K task ticket`
pub fn task_ticket(task: &[u8; ID_LEN], ticket: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = task_tickets_prefix(task);
    k.extend_from_slice(ticket);
    k
}

/// `P ticket`
pub fn pending_ticket(id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(PENDING_TICKET, ID_LEN);
    k.extend_from_slice(id);
    k
}

/// `O closed_at ticket`
pub fn closed_ticket(at: u64, id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(CLOSED_TICKET, 8 + ID_LEN);
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// `G task` — prefix of a task's guardrail decisions.
pub fn guardrail_prefix(task: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(GUARDRAIL, ID_LEN + 8);
    k.extend_from_slice(task);
    k
}

/// `G task seq`
pub fn guardrail(task: &[u8; ID_LEN], seq: u64) -> Vec<u8> {
    let mut k = guardrail_prefix(task);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}
/// The highest task id retention has removed (16 bytes): a missing task at
/// or below it may have been removed, so it is answered as `gone`.
pub const PRUNED_TASK: &[u8] = b"rT";
/// The highest event id retention has removed (BE u64): a stream resumed
/// below it has missed events, and event ids never go back below it.
pub const PRUNED_EVENT: &[u8] = b"rE";

/// The family a key belongs to, as `forgeline store stats` and
/// `forgeline_store_bytes{kind}` name it.
pub fn kind_of(key: &[u8]) -> &'static str {
    match key {
        [TASK, ..] => "task",
        [RUN, ..] => "run",
        [LEASE, ..] => "lease",
        [EVENT, ..] | [TASK_EVENT, ..] => "event",
        [IDEMPOTENCY, ..] => "idempotency",
        [TICKET, ..] | [TASK_TICKET, ..] | [PENDING_TICKET, ..] | [CLOSED_TICKET, ..] => "ticket",
        [GUARDRAIL, ..] => "guardrail_decision",
        [WORKER, ..] => "worker",
        [AUDIT, ..] => "audit",
        [b'a', ..] => "audit",
        [READY, ..] | [SCHEDULED, ..] | [DEADLINE, ..] | [STATE, ..] | [COUNT, ..] => "index",
        _ => "other",
    }
}

/// Every kind [`kind_of`] returns, in the order reports list them.
pub const KINDS: [&str; 11] = [
    "task",
    "run",
    "lease",
    "event",
    "idempotency",
    "ticket",
    "guardrail_decision",
    "worker",
    "audit",
    "index",
    "other",
];

/// The audit chain head (last seq and hash).
pub const AUDIT_HEAD: &[u8] = b"aH";
/// The audit chain anchor (last pruned seq and hash, signed with its rule).
pub const AUDIT_ANCHOR: &[u8] = b"aA";
/// The audit seal: the head and anchor when the log first got a MAC key.
pub const AUDIT_SEAL: &[u8] = b"aK";

/// `A seq`
pub fn audit(seq: u64) -> Vec<u8> {
    let mut k = with_prefix(AUDIT, 8);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seq in an `A` key.
pub fn parse_audit(key: &[u8]) -> Option<u64> {
    if key.len() != 9 {
        return None;
    }
    Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
}

fn with_prefix(prefix: u8, capacity: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + capacity);
    k.push(prefix);
    k
}

/// `T id`
pub fn task(id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(TASK, ID_LEN);
    k.extend_from_slice(id);
    k
}

/// `R id`
pub fn run(id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(RUN, ID_LEN);
    k.extend_from_slice(id);
    k
}

/// `Q queue 0x00` — the prefix of one queue's ready entries.
pub fn ready_prefix(queue: &str) -> Vec<u8> {
    let mut k = with_prefix(READY, queue.len() + 1);
    k.extend_from_slice(queue.as_bytes());
    k.push(0);
    k
}

/// `Q queue 0x00 (9-priority)` — one priority band of a queue.
pub fn ready_band_prefix(queue: &str, priority: u8) -> Vec<u8> {
    let mut k = ready_prefix(queue);
    k.push(9 - priority.min(9));
    k
}

/// A ready-index entry: highest priority first, then oldest `eligible_at`.
pub fn ready(queue: &str, priority: u8, eligible_at: u64, id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = ready_band_prefix(queue, priority);
    k.extend_from_slice(&eligible_at.to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// Splits a ready key into (eligible_at, task id bytes).
pub fn parse_ready_tail(key: &[u8]) -> Option<(u64, [u8; ID_LEN])> {
    let tail = key.len().checked_sub(8 + ID_LEN)?;
    let at = u64::from_be_bytes(key[tail..tail + 8].try_into().ok()?);
    let id = key[tail + 8..].try_into().ok()?;
    Some((at, id))
}

/// `S eligible_at id`
pub fn scheduled(eligible_at: u64, id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(SCHEDULED, 8 + ID_LEN);
    k.extend_from_slice(&eligible_at.to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// `L id`
pub fn lease(id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(LEASE, ID_LEN);
    k.extend_from_slice(id);
    k
}

/// `D deadline lease-id`
pub fn deadline(deadline: u64, lease: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(DEADLINE, 8 + ID_LEN);
    k.extend_from_slice(&deadline.to_be_bytes());
    k.extend_from_slice(lease);
    k
}

/// Splits an `S`/`D` key (time then id) into its parts.
pub fn parse_time_id(key: &[u8]) -> Option<(u64, [u8; ID_LEN])> {
    if key.len() != 1 + 8 + ID_LEN {
        return None;
    }
    let at = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let id = key[9..].try_into().ok()?;
    Some((at, id))
}

/// `E id`
pub fn event(id: u64) -> Vec<u8> {
    let mut k = with_prefix(EVENT, 8);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The event id in an `E` key.
pub fn parse_event(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// `X task` — prefix of one task's events.
pub fn task_events_prefix(task: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = with_prefix(TASK_EVENT, ID_LEN + 8);
    k.extend_from_slice(task);
    k
}

/// `X task event-id`
pub fn task_event(task: &[u8; ID_LEN], event: u64) -> Vec<u8> {
    let mut k = task_events_prefix(task);
    k.extend_from_slice(&event.to_be_bytes());
    k
}

/// The event id in an `X` key.
pub fn parse_task_event(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1 + ID_LEN..)?.try_into().ok()?))
}

/// `I principal 0x00 key`
pub fn idempotency(principal: &str, key: &str) -> Vec<u8> {
    let mut k = with_prefix(IDEMPOTENCY, principal.len() + 1 + key.len());
    k.extend_from_slice(principal.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `Z state` — prefix of the tasks in one state.
pub fn state_prefix(state: u8) -> Vec<u8> {
    vec![STATE, state]
}

/// `Z state task`
pub fn state(state: u8, task: &[u8; ID_LEN]) -> Vec<u8> {
    let mut k = state_prefix(state);
    k.extend_from_slice(task);
    k
}

/// `C state queue`
pub fn count(state: u8, queue: &str) -> Vec<u8> {
    let mut k = vec![COUNT, state];
    k.extend_from_slice(queue.as_bytes());
    k
}

/// `W worker`
pub fn worker(worker: &str) -> Vec<u8> {
    let mut k = with_prefix(WORKER, worker.len());
    k.extend_from_slice(worker.as_bytes());
    k
}

/// The id at the end of a key that ends with one.
pub fn trailing_id(key: &[u8]) -> Option<[u8; ID_LEN]> {
    key.get(key.len().checked_sub(ID_LEN)?..)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_keys_order_by_priority_then_time_then_id() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let hi_late = ready("q", 9, 200, &a);
        let lo_early = ready("q", 0, 100, &a);
        let hi_early = ready("q", 9, 100, &b);
        let mut keys = vec![lo_early.clone(), hi_late.clone(), hi_early.clone()];
        keys.sort();
        assert_eq!(keys, vec![hi_early, hi_late, lo_early]);
    }

    #[test]
    fn queue_prefixes_do_not_overlap() {
        // "ab" must not see entries of "abc".
        let k = ready("abc", 5, 1, &[0; 16]);
        assert!(!k.starts_with(&ready_prefix("ab")));
        assert!(k.starts_with(&ready_prefix("abc")));
    }

    #[test]
    fn parsers_invert_builders() {
        let id = [7u8; 16];
        assert_eq!(parse_ready_tail(&ready("q", 3, 42, &id)), Some((42, id)));
        assert_eq!(parse_time_id(&scheduled(9, &id)), Some((9, id)));
        assert_eq!(parse_event(&event(77)), Some(77));
        assert_eq!(parse_task_event(&task_event(&id, 5)), Some(5));
        assert_eq!(trailing_id(&state(2, &id)), Some(id));
    }
}
