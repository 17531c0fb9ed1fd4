//! Test fixture: a single-shot job that misbehaves on request. The operator
//! argument `mode` picks the behaviour: `ok` (default), `fatal`, `retryable`,
//! `skip`, `trap` (abort: wasm `unreachable`), `panic`, `loop` (never returns),
//! `memory` (allocates until it hits the limit), `print` (writes to stdout).

use sundial_guest::{Context, Job, JobError, JobInfo, Outcome, log};

struct Faulty;

impl Job for Faulty {
    fn info() -> JobInfo {
        JobInfo::new("faulty", "Misbehaves on request (test fixture)", "0 0 1 1 *")
    }

    fn run(ctx: &Context) -> Result<Outcome, JobError> {
        let mode = ctx.arg("mode").unwrap_or("ok");
        log::info(&format!("mode {mode}, attempt {}", ctx.attempt));
        match mode {
            "ok" => Ok(Outcome::changed(1).with_message("all good")),
            "fatal" => Err(JobError::fatal("the fixture failed on purpose")),
            "retryable" => Err(JobError::retryable("try again later")),
            "skip" => Err(JobError::skip("not enough reports")),
            "trap" => std::process::abort(),
            "panic" => panic!("fixture panicked on purpose"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            "print" => {
                println!("hello from stdout");
                eprintln!("hello from stderr");
                Ok(Outcome::unchanged())
            }
            other => Err(JobError::fatal(format!("unknown mode {other:?}"))),
        }
    }
}

sundial_guest::export_job!(Faulty);
