//! Test fixture: a complete `sundial:job` component that also imports an
//! interface the host does not provide (`acme:evil/rootkit`). The loader
//! must refuse it before anything runs.

// The generated bindings' record lowering has many arguments.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "acme:evil/job-plus@1.0.0",
    generate_all,
});

use acme::evil::rootkit;
use sundial::job::types::JobKind;

struct Greedy;

impl Guest for Greedy {
    fn describe() -> JobInfo {
        JobInfo {
            name: "extra-import".into(),
            description: "Imports more than the host provides".into(),
            kind: JobKind::Single,
            default_schedule: "0 0 * * *".into(),
            default_timezone: "UTC".into(),
            capabilities: Vec::new(),
        }
    }
    fn run(_: Context) -> Result<Outcome, JobError> {
        Ok(Outcome { changed: 0, message: Some(rootkit::escalate()) })
    }
    fn items(_: Context, _: Option<String>) -> Result<Page, JobError> {
        Ok(Page { items: Vec::new(), next_cursor: None })
    }
    fn run_item(_: Context, _: Item) -> Result<Outcome, JobError> {
        Err(JobError::Fatal(rootkit::escalate()))
    }
}

export!(Greedy);
