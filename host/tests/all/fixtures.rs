//! Fixture builders shared by the tests and the benchmarks (which include
//! this file by path): they need nothing but the standard library,
//! rusqlite, chrono and the host crate.

#![allow(dead_code)]

use std::path::Path;

/// `bytes` (a component) with a custom section appended: the same job,
/// another digest.
pub fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { b } else { b | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let mut payload = Vec::new();
    leb(tag.len(), &mut payload);
    payload.extend_from_slice(tag.as_bytes());
    payload.extend_from_slice(b"sundial test variant");
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// What the `slow-items` fixture works on, in the SQLite file `db`: `users`
/// with ids 1..=`users`, and an empty `visits`.
pub fn users_and_visits(db: &Path, users: i64) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY);
         CREATE TABLE visits (user_id INTEGER, execution_id INTEGER);",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx.prepare("INSERT INTO users (id) VALUES (?1)").unwrap();
        for id in 1..=users {
            insert.execute([id]).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Thirty IANA zones across every continent, with half- and quarter-hour
/// offsets and both hemispheres' DST (item-local schedules).
pub const ZONES: [&str; 30] = [
    "UTC",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/St_Johns",
    "America/Sao_Paulo",
    "America/Mexico_City",
    "America/Bogota",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Moscow",
    "Africa/Cairo",
    "Africa/Lagos",
    "Asia/Tehran",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Yangon",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Seoul",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Auckland",
    "Pacific/Chatham",
];

/// A scheduled first attempt of `job` with no database, state or share, and
/// a 10 s deadline: a runtime-level execution of a fixture component.
pub fn invocation(id: i64, job: &str, scheduled_for: chrono::DateTime<chrono::Utc>) -> sundial::runtime::Invocation {
    use sundial::model::{ExecutionId, RunArgs, RunContext, Trigger};
    use sundial::runtime::{CancelToken, Invocation, Limits, Progress};
    Invocation {
        ctx: RunContext {
            execution_id: ExecutionId(id),
            job_name: job.into(),
            scheduled_for,
            timezone: "UTC".into(),
            trigger: Trigger::Schedule,
            attempt: 1,
            args: RunArgs::default(),
        },
        limits: Limits { timeout: std::time::Duration::from_secs(10), ..Limits::default() },
        db: None,
        state: None,
        cancel: CancelToken::new(),
        progress: Progress::new(),
        shared: None,
    }
}
