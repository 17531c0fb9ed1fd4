//! Test fixture: a component that exports a correct `describe` but none of
//! `run`, `items` and `run-item`. The loader must refuse it.

wit_bindgen::generate!({
    inline: r#"
        package sundial:job@0.1.0;
        interface types {
            enum db-access { read-only, read-write }
            variant capability { database(db-access), http(string), key-value }
            enum job-kind { single, items }
            record job-info {
                name: string,
                description: string,
                kind: job-kind,
                default-schedule: string,
                default-timezone: string,
                capabilities: list<capability>,
            }
        }
        world job {
            use types.{job-info};
            export describe: func() -> job-info;
        }
    "#,
});

use sundial::job::types::JobKind;

struct DescribeOnly;

impl Guest for DescribeOnly {
    fn describe() -> JobInfo {
        JobInfo {
            name: "missing-export".into(),
            description: "Exports describe only".into(),
            kind: JobKind::Single,
            default_schedule: "0 0 * * *".into(),
            default_timezone: "UTC".into(),
            capabilities: Vec::new(),
        }
    }
}

export!(DescribeOnly);
