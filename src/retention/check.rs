//! `forgeline store check`: every index entry points at its record and every
//! record has its index entries; counters equal what they count; nothing
//! hangs off a task that is not there. Retention must keep all of this true,
//! after every write and after a crash in the middle of a pass.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::{EventRecord, LeaseRecord, RunRecord, TaskRecord, Ticket};
use crate::store::{decode, keys, Record, Store, StoreError};

/// One thing found wrong, described for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconsistency(pub String);

impl std::fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Id = [u8; keys::ID_LEN];

fn id_hex(id: &[u8]) -> String {
    crate::model::TaskId::from_bytes(id.try_into().unwrap_or([0; keys::ID_LEN])).to_string()
}

struct Checker<'a> {
    store: &'a Store,
    found: Vec<Inconsistency>,
    /// Task id → (state code, queue).
    tasks: HashMap<Id, (u8, String)>,
}

impl Checker<'_> {
    fn bad(&mut self, what: String) {
        self.found.push(Inconsistency(what));
    }

    fn records<R: Record>(&mut self, prefix: u8) -> Result<Vec<(Vec<u8>, R)>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan_raw(&[prefix])? {
            match decode::<R>(&v) {
                Ok(r) => out.push((k.to_vec(), r)),
                Err(e) => self.bad(format!("record {:?} does not decode: {e}", k.as_ref())),
            }
        }
        Ok(out)
    }

    fn has_task(&mut self, id: Id, what: &str) {
        if !self.tasks.contains_key(&id) {
            self.bad(format!(
                "{what} belongs to task {} which is not stored",
                id_hex(&id)
            ));
        }
    }

    fn tasks_and_counts(&mut self) -> Result<(), StoreError> {
        for (_, t) in self.records::<TaskRecord>(keys::TASK)? {
            let code = t.state.kind().code();
            self.tasks
                .insert(t.id.to_bytes(), (code, t.queue.as_str().to_string()));
        }
        let mut indexed = HashSet::new();
        for k in self.store.keys(&[keys::STATE], None, usize::MAX)? {
            let (Some(&code), Some(id)) = (k.get(1), keys::trailing_id(&k)) else {
                continue;
            };
            indexed.insert(id);
            match self.tasks.get(&id) {
                Some((c, _)) if *c == code => {}
                Some(_) => self.bad(format!(
                    "task {} is indexed under a state it is not in",
                    id_hex(&id)
                )),
                None => self.bad(format!(
                    "state index names task {} which is not stored",
                    id_hex(&id)
                )),
            }
        }
        let mut counts: BTreeMap<(u8, String), u64> = BTreeMap::new();
        let missing: Vec<Id> = self
            .tasks
            .keys()
            .filter(|id| !indexed.contains(*id))
            .copied()
            .collect();
        for id in missing {
            self.bad(format!("task {} has no state index entry", id_hex(&id)));
        }
        for (code, queue) in self.tasks.values() {
            *counts.entry((*code, queue.clone())).or_default() += 1;
        }
        for (k, v) in self.store.scan_raw(&[keys::COUNT])? {
            let (code, queue) = (k[1], String::from_utf8_lossy(&k[2..]).into_owned());
            let stored = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
            let real = counts.remove(&(code, queue.clone())).unwrap_or(0);
            if stored != real {
                self.bad(format!(
                    "count of state {code} in queue {queue:?} is {stored}, but {real} tasks are"
                ));
            }
        }
        for ((code, queue), n) in counts {
            self.bad(format!(
                "no count of state {code} in queue {queue:?}, but {n} tasks are"
            ));
        }
        Ok(())
    }

    fn events(&mut self) -> Result<(), StoreError> {
        let mut by_task = HashSet::new();
        for k in self.store.keys(&[keys::TASK_EVENT], None, usize::MAX)? {
            let (Some(id), Some(e)) = (k.get(1..1 + keys::ID_LEN), keys::parse_task_event(&k))
            else {
                continue;
            };
            by_task.insert((id.try_into().unwrap_or([0; keys::ID_LEN]), e));
        }
        for (_, e) in self.records::<EventRecord>(keys::EVENT)? {
            let task = e.task_id.to_bytes();
            self.has_task(task, &format!("event {}", e.id));
            if !by_task.remove(&(task, e.id)) {
                self.bad(format!("event {} is missing from its task's index", e.id));
            }
        }
        for (task, e) in by_task {
            self.bad(format!(
                "task {}'s event index names event {e}, which is not stored",
                id_hex(&task)
            ));
        }
        Ok(())
    }

    fn runs_leases_and_rest(&mut self) -> Result<(), StoreError> {
        for (_, r) in self.records::<RunRecord>(keys::RUN)? {
            self.has_task(r.task_id.to_bytes(), &format!("run {}", r.id));
        }
        for (_, l) in self.records::<LeaseRecord>(keys::LEASE)? {
            self.has_task(l.task_id.to_bytes(), &format!("lease {}", l.id));
        }
        for k in self.store.keys(&[keys::GUARDRAIL], None, usize::MAX)? {
            if let Some(id) = k.get(1..1 + keys::ID_LEN).and_then(|s| s.try_into().ok()) {
                self.has_task(id, "a guardrail decision");
            }
        }
        for (k, r) in self.records::<crate::model::IdempotencyRecord>(keys::IDEMPOTENCY)? {
            let what = format!("idempotency record {:?}", String::from_utf8_lossy(&k[1..]));
            self.has_task(r.task_id.to_bytes(), &what);
        }
        Ok(())
    }

    fn tickets(&mut self) -> Result<(), StoreError> {
        let mut index: HashSet<Vec<u8>> = HashSet::new();
        for p in [keys::TASK_TICKET, keys::PENDING_TICKET, keys::CLOSED_TICKET] {
            index.extend(
                self.store
                    .keys(&[p], None, usize::MAX)?
                    .iter()
                    .map(|k| k.to_vec()),
            );
        }
        for (_, t) in self.records::<Ticket>(keys::TICKET)? {
            let id = t.id.to_bytes();
            let task = t.task_id.to_bytes();
            self.has_task(task, &format!("ticket {}", t.id));
            let mut want = vec![keys::task_ticket(&task, &id)];
            if t.state.pending() {
                want.push(keys::pending_ticket(&id));
            }
            if let Some(at) = t.closed_at {
                want.push(keys::closed_ticket(at, &id));
            }
            for k in want {
                if !index.remove(&k) {
                    self.bad(format!(
                        "ticket {} is missing an index entry ({})",
                        t.id, k[0] as char
                    ));
                }
            }
        }
        for k in index {
            self.bad(format!(
                "ticket index entry {:?} names no stored ticket",
                k[0] as char
            ));
        }
        Ok(())
    }
}

/// Checks the whole store; an empty list means consistent.
pub fn check_store(store: &Store) -> Result<Vec<Inconsistency>, StoreError> {
    let mut c = Checker {
        store,
        found: Vec::new(),
        tasks: HashMap::new(),
    };
    c.tasks_and_counts()?;
    c.events()?;
    c.runs_leases_and_rest()?;
    c.tickets()?;
    Ok(c.found)
}
