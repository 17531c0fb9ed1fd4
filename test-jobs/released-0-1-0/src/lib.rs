//! Test fixture: a job built straight from the frozen `sundial:job@0.1.0`
//! contract in `wit/released/`, without the SDK, the way a component built
//! when 0.1.0 was current looks to later hosts. It uses every import
//! interface once, so a host that stops providing any of them fails the test.

// The generated bindings have functions with many parameters.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit/released/sundial-job-0.1.0.wit",
    world: "sundial:job/job@0.1.0",
});

use sundial::job::types::{Capability, JobKind, Level, Value};
use sundial::job::{database, log, progress, state, time};

struct Released;

impl Guest for Released {
    fn describe() -> JobInfo {
        JobInfo {
            name: "released-0-1-0".into(),
            description: "A job built against sundial:job@0.1.0".into(),
            kind: JobKind::Single,
            default_schedule: "0 0 * * *".into(),
            default_timezone: "UTC".into(),
            capabilities: vec![Capability::KeyValue],
        }
    }

    fn run(ctx: Context) -> Result<Outcome, JobError> {
        let local = time::to_local(ctx.scheduled_for, "Asia/Tokyo").map_err(JobError::Fatal)?;
        let runs = state::get("runs").map_err(JobError::Fatal)?.and_then(|b| b.first().copied()).unwrap_or(0) + 1;
        state::set("runs", &[runs]).map_err(JobError::Fatal)?;
        // No database grant: the host must refuse, with a `denied` error.
        let denied = database::query("SELECT 1", &[Value::Integer(1)]).is_err();
        progress::report(1, Some(1));
        log::log(
            Level::Info,
            &format!(
                "0.1.0 job ran: run {runs}, Tokyo {:04}-{:02}-{:02}, database denied: {denied}",
                local.year, local.month, local.day
            ),
        );
        Ok(Outcome { changed: 0, message: Some(format!("run {runs}")) })
    }

    fn items(_ctx: Context, _cursor: Option<String>) -> Result<Page, JobError> {
        Err(JobError::Fatal("not an item job".into()))
    }

    fn run_item(_ctx: Context, _item: Item) -> Result<Outcome, JobError> {
        Err(JobError::Fatal("not an item job".into()))
    }
}

export!(Released);
