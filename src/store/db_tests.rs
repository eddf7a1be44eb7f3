//! Tests of the store handle: commit rounds, failed transactions, reads
//! inside a write, concurrent writers, reopening.

use super::*;
use crate::store::Record;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Thing(u32);
impl Record for Thing {
    const VERSION: u8 = 1;
}

fn open(d: Durability) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), d).unwrap();
    (dir, s)
}

#[tokio::test]
async fn writes_applied_before_one_wait_share_one_commit_round() {
    let (_d, s) = open(Durability::Sync);
    // A handler's write and the request's audit record, then the wait.
    let ((), a) = s.write(|t| t.put(b"a".to_vec(), &Thing(1))).unwrap();
    let ((), b) = s.write(|t| t.put(b"b".to_vec(), &Thing(2))).unwrap();
    // Applying asks for no round: nothing is durable until someone waits.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(s.durable().borrow().rounds, 0);
    s.wait_durable(a.max(b)).await.unwrap();
    assert_eq!(s.durable().borrow().rounds, 1);
    // Waiting for a write that is already durable costs no round.
    s.wait_durable(a).await.unwrap();
    assert_eq!(s.durable().borrow().rounds, 1);
}

#[tokio::test]
async fn a_failed_transaction_writes_nothing_and_takes_no_event_id() {
    let (_d, s) = open(Durability::Sync);
    let r: Result<((), Commit), StoreError> = s.write(|t| {
        t.put(b"k".to_vec(), &Thing(1))?;
        t.next_event_id();
        Err(StoreError::Closed)
    });
    assert!(r.is_err());
    assert_eq!(s.get::<Thing>(b"k").unwrap(), None);
    let (id, c) = s.write(|t| Ok::<_, StoreError>(t.next_event_id())).unwrap();
    assert_eq!(id, 1);
    s.wait_durable(c).await.unwrap();
    assert_eq!(s.durable().borrow().event_id, 1);
}

#[tokio::test]
async fn reads_inside_a_write_see_its_own_writes() {
    let (_d, s) = open(Durability::Relaxed);
    let (got, c) = s
        .write(|t| {
            t.put(b"a1".to_vec(), &Thing(1))?;
            t.put_raw(b"a0".to_vec(), b"");
            let first = t.first_key(b"a")?;
            t.delete(b"a0".to_vec());
            let second = t.first_key(b"a")?;
            Ok::<_, StoreError>((t.get::<Thing>(b"a1")?, first, second))
        })
        .unwrap();
    s.wait_durable(c).await.unwrap();
    assert_eq!(got.0, Some(Thing(1)));
    assert_eq!(got.1.as_deref(), Some(&b"a0"[..]));
    assert_eq!(got.2.as_deref(), Some(&b"a1"[..]));
}

#[tokio::test]
async fn many_concurrent_writers_share_commit_rounds() {
    let (_d, s) = open(Durability::Sync);
    let mut handles = Vec::new();
    for i in 0..64u32 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let ((), c) = s
                .write(|t| t.put(format!("w{i:03}").into_bytes(), &Thing(i)))
                .unwrap();
            s.wait_durable(c).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(s.keys(b"w", None, 100).unwrap().len(), 64);
    assert_eq!(s.durable().borrow().seq, 64);
}

#[test]
fn reopening_keeps_the_event_counter() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), Durability::Relaxed).unwrap();
        let _ = s
            .write(|t| {
                let id = t.next_event_id();
                t.put_raw(keys::event(id), b"x");
                Ok::<_, StoreError>(())
            })
            .unwrap();
        s.close().unwrap();
    }
    let s = Store::open(dir.path(), Durability::Relaxed).unwrap();
    let (id, _) = s.write(|t| Ok::<_, StoreError>(t.next_event_id())).unwrap();
    assert_eq!(id, 2);
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
}
