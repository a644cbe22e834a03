//! The writer thread: one connection that applies every change, with group commit.
//!
//! Changes arrive over a channel. The thread takes the first waiting change and every
//! change already queued behind it (up to [`MAX_BATCH`]), runs each inside its own
//! savepoint of one `BEGIN IMMEDIATE` transaction, and commits once. With
//! `synchronous=FULL`, one WAL fsync then covers the whole batch instead of one per change,
//! which is what lets concurrent manifest pushes scale.
//!
//! - A change whose closure fails (or panics) is rolled back to its savepoint (the first
//!   change of a transaction has none: the transaction itself is rolled back, and the
//!   changes after it start a new one); the others in the batch are not affected, exactly as if each had been its own transaction run
//!   one after the other.
//! - No caller hears back before the commit that holds its change is durable. If that
//!   commit fails, every change in it fails with the commit's error, and none is applied.
//! - An error that makes SQLite roll back the whole transaction by itself (a full disk,
//!   an I/O error) fails the changes that ran before it in that batch; the ones not yet
//!   run go into a fresh transaction.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;

use rusqlite::Connection;
use storage_traits::MetadataError;
use tokio::sync::oneshot;

use crate::store::{BACKEND, Fail};

/// Most changes in one transaction. A bound keeps one slow batch from delaying the answer
/// to its first change for long; under load the queue rarely holds more anyway (one
/// change per request in flight).
const MAX_BATCH: usize = 64;

type Panic = Box<dyn Any + Send>;
/// What a closure returned, or the panic it raised (re-raised in the caller's task).
type Outcome<T> = Result<Result<T, MetadataError>, Panic>;

/// A change waiting for the writer, its closure's type erased.
trait Change: Send {
    /// Runs the closure; `true` if it succeeded, so its rows are to be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known (`Ok`: committed).
    fn answer(self: Box<Self>, committed: Result<(), &str>);
}

struct Pending<T, F> {
    f: Option<F>,
    out: Option<Outcome<T>>,
    reply: oneshot::Sender<Outcome<T>>,
}

impl<T, F> Change for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, Fail> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let out = catch_unwind(AssertUnwindSafe(|| f(conn))).map(|r| r.map_err(|Fail(e)| e));
        let ok = matches!(out, Ok(Ok(_)));
        self.out = Some(out);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        let out = match (self.out, committed) {
            // Its own failure (already rolled back to its savepoint) comes first.
            (Some(out @ (Ok(Err(_)) | Err(_))), _) => out,
            (Some(Ok(Ok(v))), Ok(())) => Ok(Ok(v)),
            (Some(Ok(Ok(_))) | None, Err(e)) => Ok(Err(MetadataError::backend(
                BACKEND,
                format!("transaction not committed: {e}"),
            ))),
            (None, Ok(())) => Ok(Err(MetadataError::backend(BACKEND, "change was never run"))),
        };
        // The caller may have gone away (its request was cancelled); the change stands.
        let _ = self.reply.send(out);
    }
}

enum Msg {
    /// A change to commit, possibly together with others.
    Change(Box<dyn Change>),
    /// Work that needs the connection to itself: a dry run that rolls back, or a read of
    /// an in-memory database (which only this connection can see).
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// The handle to the writer thread. Dropping the last one stops the thread once it has
/// answered what was already queued.
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    pub(crate) fn spawn(conn: Connection) -> Result<Writer, MetadataError> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, &rx))
            .map_err(|e| MetadataError::backend(BACKEND, e))?;
        Ok(Writer { tx })
    }

    /// Runs `f` inside the next group-committed transaction; its changes are kept if it
    /// returns `Ok` and the transaction commits.
    pub(crate) async fn change<T, F>(&self, f: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Change(Box::new(Pending {
            f: Some(f),
            out: None,
            reply,
        })))?;
        receive(rx).await
    }

    /// Runs `f` with the connection to itself, outside any batch. `f` manages its own
    /// transaction; one left open is rolled back afterwards.
    pub(crate) async fn alone<T, F>(&self, f: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Alone(Box::new(move |conn: &mut Connection| {
            let out =
                catch_unwind(AssertUnwindSafe(|| f(&mut *conn))).map(|r| r.map_err(|Fail(e)| e));
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            let _ = reply.send(out);
        })))?;
        receive(rx).await
    }

    fn send(&self, msg: Msg) -> Result<(), MetadataError> {
        self.tx.send(msg).map_err(|_| stopped())
    }
}

fn stopped() -> MetadataError {
    MetadataError::backend(BACKEND, "the SQLite writer thread has stopped")
}

async fn receive<T>(rx: oneshot::Receiver<Outcome<T>>) -> Result<T, MetadataError> {
    match rx.await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => Err(stopped()),
    }
}

fn run(mut conn: Connection, rx: &mpsc::Receiver<Msg>) {
    let mut next = None;
    loop {
        let msg = match next.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return, // every handle is gone
            },
        };
        match msg {
            Msg::Alone(f) => f(&mut conn),
            Msg::Change(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Msg::Change(c)) => batch.push(c),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit(&conn, batch);
            }
        }
    }
}

/// Statements run through the connection's statement cache: parsed once, not per change.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn commit(conn: &Connection, mut batch: Vec<Box<dyn Change>>) {
    while !batch.is_empty() {
        if !conn.is_autocommit() {
            // Only reachable if an earlier rollback failed; start clean.
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
            let e = e.to_string();
            for c in batch {
                c.answer(Err(&e));
            }
            return;
        }
        let mut ran = Vec::with_capacity(batch.len());
        let mut rest = batch.into_iter();
        let mut aborted = None;
        for mut c in rest.by_ref() {
            // The first change of a transaction needs no savepoint (which costs a copy of
            // every page it touches): if it fails, the whole transaction is rolled back
            // and the others start a fresh one.
            let first = ran.is_empty();
            if !first && let Err(e) = exec(conn, "SAVEPOINT change") {
                aborted = Some(e.to_string());
                ran.push(c);
                break;
            }
            let ok = c.run(conn);
            ran.push(c);
            let end = if conn.is_autocommit() {
                // SQLite rolled back the whole transaction on an error (SQLITE_FULL,
                // SQLITE_IOERR, ...): the changes before this one are gone too.
                Err("the transaction was rolled back by an error in another change".into())
            } else if first {
                // Its own failure is its answer; nothing else has run in this transaction.
                if ok {
                    Ok(())
                } else {
                    Err("rolled back".into())
                }
            } else if ok {
                exec(conn, "RELEASE change").map_err(|e| e.to_string())
            } else {
                exec(conn, "ROLLBACK TO change")
                    .and_then(|()| exec(conn, "RELEASE change"))
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = end {
                aborted = Some(e);
                break;
            }
        }
        let outcome = match aborted {
            Some(e) => Err(e),
            None => exec(conn, "COMMIT").map_err(|e| e.to_string()),
        };
        if outcome.is_err() && !conn.is_autocommit() {
            let _ = exec(conn, "ROLLBACK");
        }
        for c in ran {
            c.answer(outcome.as_ref().map(|_| ()).map_err(String::as_str));
        }
        batch = rest.collect();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .unwrap();
        Writer::spawn(conn).unwrap()
    }

    fn insert(conn: &Connection, k: i64) -> Result<i64, Fail> {
        conn.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
        Ok(k)
    }

    async fn keys(w: &Writer) -> Vec<i64> {
        w.alone(|conn| {
            let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<i64>, _>>()?)
        })
        .await
        .unwrap()
    }

    /// Many changes queued at once share transactions; one that fails (after writing a
    /// row) or panics leaves no trace and takes none of the others with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failing_changes_do_not_affect_their_batch() {
        let w = Arc::new(writer());
        let mut tasks = Vec::new();
        for k in 0..200_i64 {
            let w = Arc::clone(&w);
            tasks.push(tokio::spawn(async move {
                w.change(move |conn| {
                    let k = insert(conn, k)?;
                    match k % 10 {
                        3 => Err(Fail(MetadataError::Corrupt(format!("refused {k}")))),
                        7 => panic!("change {k} panics"),
                        // A duplicate key fails inside SQLite, after the first insert.
                        5 => insert(conn, k),
                        _ => Ok(k),
                    }
                })
                .await
            }));
        }
        for (k, task) in (0_i64..).zip(tasks) {
            match (k % 10, task.await) {
                (3 | 5, Ok(Err(_))) => {}
                (7, Err(join)) => assert!(join.is_panic()),
                (_, Ok(Ok(got))) => assert_eq!(got, k),
                (_, other) => panic!("change {k}: unexpected {other:?}"),
            }
        }
        let expected: Vec<i64> = (0..200)
            .filter(|k| ![3, 5, 7].contains(&(k % 10)))
            .collect();
        assert_eq!(keys(&w).await, expected);
    }

    /// One batch, in a known order: the writer is held until every change is queued. The
    /// failing first change (no savepoint) rolls back alone; the rest still commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_first_change_leaves_the_batch_alone() {
        let w = Arc::new(writer());
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (holding, started) = std::sync::mpsc::channel::<()>();
        let hold = {
            let w = Arc::clone(&w);
            tokio::spawn(async move {
                w.alone(move |_| {
                    holding.send(()).ok();
                    held.recv().ok();
                    Ok(())
                })
                .await
            })
        };
        started.recv().unwrap();
        let mut pending = Vec::new();
        for k in 0..6_i64 {
            let mut change = Box::pin(w.change(move |conn| {
                insert(conn, k)?;
                if k % 3 == 0 {
                    return Err(Fail(MetadataError::Corrupt(format!("refused {k}"))));
                }
                Ok(k)
            }));
            // The first poll queues it, so the queue holds them in this order.
            assert!(futures::poll!(&mut change).is_pending());
            pending.push(change);
        }
        release.send(()).unwrap();
        hold.await.unwrap().unwrap();
        let results: Vec<bool> = futures::future::join_all(pending)
            .await
            .into_iter()
            .map(|r| r.is_ok())
            .collect();
        assert_eq!(results, [false, true, true, false, true, true]);
        assert_eq!(keys(&w).await, vec![1, 2, 4, 5]);
    }

    /// A dry run sees its own changes and leaves nothing; the writer goes on serving.
    #[tokio::test]
    async fn alone_rolls_back_what_it_leaves_open() {
        let w = writer();
        w.change(|conn| insert(conn, 1)).await.unwrap();
        let seen = w
            .alone(|conn| {
                let tx = conn.transaction()?;
                insert(&tx, 2)?;
                let n: i64 = tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?;
                std::mem::forget(tx); // left open on purpose
                Ok(n)
            })
            .await
            .unwrap();
        assert_eq!(seen, 2);
        w.change(|conn| insert(conn, 3)).await.unwrap();
        assert_eq!(keys(&w).await, vec![1, 3]);
    }
}
