//! Prometheus metrics, fed by the host's events and rendered in the text
//! exposition format for `GET /metrics`.
//!
//! Labels are bounded: `job` (one per loaded job), `status` and `outcome`
//! (closed sets). Nothing per execution or per item becomes a label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::events::Event;
use crate::model::{ExecutionId, JobRecord, Trigger};

/// Upper bounds (seconds) of the execution duration buckets.
const DURATION_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Upper bounds (seconds) of the fire lateness buckets.
const LATENESS_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Upper bounds (seconds) of the reload latency buckets: a swap from the
/// compiled-artifact cache is under a millisecond, a file written in place
/// waits its 200 ms quiet period, a compile takes seconds.
const RELOAD_BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    executions: BTreeMap<(String, &'static str), u64>,
    items: BTreeMap<(String, &'static str), u64>,
    durations: BTreeMap<String, Histogram>,
    lateness: Histogram,
    reloads: Histogram,
    /// Per job, the executions started and not finished.
    running: BTreeMap<String, std::collections::BTreeSet<ExecutionId>>,
    overruns: BTreeMap<String, u64>,
    events_missed: u64,
}

/// The host's metrics.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            inner: Mutex::new(Inner {
                executions: BTreeMap::new(),
                items: BTreeMap::new(),
                durations: BTreeMap::new(),
                lateness: Histogram::new(&LATENESS_BUCKETS),
                reloads: Histogram::new(&RELOAD_BUCKETS),
                running: BTreeMap::new(),
                overruns: BTreeMap::new(),
                events_missed: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the events from `rx` until the channel closes. Must be called
    /// inside an actix system (or a tokio `LocalSet`).
    pub fn follow(self: &Arc<Self>, mut rx: Receiver<Event>) {
        let me = self.clone();
        actix_rt::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => me.record(&event),
                    Err(RecvError::Lagged(n)) => me.lock().events_missed += n,
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }

    /// Counts one event.
    pub fn record(&self, event: &Event) {
        let mut m = self.lock();
        match event {
            Event::ExecutionStarted { id, job, .. } => {
                m.running.entry(job.clone()).or_default().insert(*id);
            }
            Event::ExecutionFinished {
                id, job, trigger, due_at, status, guest_started_at, finished_at, items, ..
            } => {
                // A run cancelled while it waited (a slot, its jitter) never started.
                if let Some(r) = m.running.get_mut(job) {
                    r.remove(id);
                }
                *m.executions.entry((job.clone(), status.as_str())).or_default() += 1;
                for (outcome, n) in [("ok", items.ok), ("skipped", items.skipped), ("failed", items.failed)] {
                    if n > 0 {
                        *m.items.entry((job.clone(), outcome)).or_default() += n;
                    }
                }
                if let Some(started) = guest_started_at {
                    let secs = (*finished_at - *started).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    m.durations.entry(job.clone()).or_insert_with(|| Histogram::new(&DURATION_BUCKETS)).observe(secs);
                    if matches!(trigger, Trigger::Schedule) {
                        let late = (*started - *due_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                        m.lateness.observe(late);
                    }
                }
            }
            Event::ExecutionOverrun { job, .. } => *m.overruns.entry(job.clone()).or_default() += 1,
            Event::JobReloaded { took_us, .. } => m.reloads.observe(*took_us as f64 / 1e6),
            Event::ExecutionProgress { .. } | Event::JobChanged { .. } | Event::SchedulerChanged { .. } => {}
        }
    }

    /// The exposition text: the counters above plus each job's current state
    /// (`jobs`) and the global switch.
    pub fn render(&self, jobs: &[JobRecord], scheduler_enabled: bool, version: &str) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(4096);
        let job = |name: &str| format!("job=\"{}\"", escape(name));

        header(&mut out, "sundial_up", "gauge", "1 while the host is running.");
        let _ = writeln!(out, "sundial_up 1");
        header(&mut out, "sundial_build_info", "gauge", "The host's version.");
        let _ = writeln!(out, "sundial_build_info{{version=\"{}\"}} 1", escape(version));
        header(&mut out, "sundial_scheduler_enabled", "gauge", "1 if the global switch is on.");
        let _ = writeln!(out, "sundial_scheduler_enabled {}", u8::from(scheduler_enabled));

        header(&mut out, "sundial_executions_total", "counter", "Executions finished on this host, by job and status.");
        for ((name, status), n) in &m.executions {
            let _ = writeln!(out, "sundial_executions_total{{{},status=\"{status}\"}} {n}", job(name));
        }
        header(&mut out, "sundial_items_total", "counter", "Items processed on this host, by job and outcome.");
        for ((name, outcome), n) in &m.items {
            let _ = writeln!(out, "sundial_items_total{{{},outcome=\"{outcome}\"}} {n}", job(name));
        }
        header(&mut out, "sundial_execution_duration_seconds", "histogram", "Time from the guest call to the end.");
        for (name, h) in &m.durations {
            h.render(&mut out, "sundial_execution_duration_seconds", &job(name));
        }
        header(
            &mut out,
            "sundial_fire_lateness_seconds",
            "histogram",
            "Time from a scheduled instant to the start of its guest call.",
        );
        m.lateness.render(&mut out, "sundial_fire_lateness_seconds", "");
        header(
            &mut out,
            "sundial_reload_seconds",
            "histogram",
            "Time from the file event that completed a changed job file to its new version live.",
        );
        m.reloads.render(&mut out, "sundial_reload_seconds", "");
        header(&mut out, "sundial_running_executions", "gauge", "Executions running on this host now.");
        for (name, ids) in &m.running {
            let _ = writeln!(out, "sundial_running_executions{{{}}} {}", job(name), ids.len());
        }
        header(&mut out, "sundial_overruns_total", "counter", "Executions that ran past their expected duration.");
        for (name, n) in &m.overruns {
            let _ = writeln!(out, "sundial_overruns_total{{{}}} {n}", job(name));
        }
        header(&mut out, "sundial_job_enabled", "gauge", "1 if the job's switch is on.");
        for j in jobs {
            let _ = writeln!(out, "sundial_job_enabled{{{}}} {}", job(&j.name), u8::from(j.enabled));
        }
        header(&mut out, "sundial_job_version", "gauge", "The job's current component version number.");
        for j in jobs {
            let _ = writeln!(out, "sundial_job_version{{{}}} {}", job(&j.name), j.component_version.unwrap_or(0));
        }
        header(&mut out, "sundial_job_load_failed", "gauge", "1 if the job's latest file was rejected.");
        for j in jobs {
            let _ = writeln!(out, "sundial_job_load_failed{{{}}} {}", job(&j.name), u8::from(j.load_error.is_some()));
        }
        header(&mut out, "sundial_missed_fires_total", "counter", "Scheduled instants not run (misfire policy).");
        for j in jobs {
            let _ = writeln!(out, "sundial_missed_fires_total{{{}}} {}", job(&j.name), j.missed_fires);
        }
        header(&mut out, "sundial_metric_events_missed_total", "counter", "Events the metrics fell behind on.");
        let _ = writeln!(out, "sundial_metric_events_missed_total {}", m.events_missed);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::events::ItemCounts;
    use crate::model::{ExecutionId, ExecutionStatus};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Fails unless each of `lines` is a whole line of `text`.
    fn has_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.lines().any(|l| l == *line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn finished_executions_become_counters_and_histograms() {
        let m = Metrics::new();
        let at = t("2026-11-23T03:00:00Z");
        m.record(&Event::ExecutionStarted {
            id: ExecutionId(1),
            job: "snapshot".into(),
            trigger: Trigger::Schedule,
            scheduled_for: at,
            attempt: 1,
        });
        let running = m.render(&[], true, "0.1.0");
        assert!(running.contains("sundial_running_executions{job=\"snapshot\"} 1"), "{running}");
        m.record(&Event::ExecutionFinished {
            id: ExecutionId(1),
            job: "snapshot".into(),
            trigger: Trigger::Schedule,
            scheduled_for: at,
            due_at: at,
            status: ExecutionStatus::Partial,
            guest_started_at: Some(at + TimeDelta::milliseconds(3)),
            finished_at: at + TimeDelta::milliseconds(1503),
            items: ItemCounts { total: 10, ok: 7, skipped: 2, failed: 1 },
        });
        let text = m.render(&[], true, "0.1.0");
        has_lines(
            &text,
            &[
                "sundial_executions_total{job=\"snapshot\",status=\"partial\"} 1",
                "sundial_items_total{job=\"snapshot\",outcome=\"ok\"} 7",
                "sundial_items_total{job=\"snapshot\",outcome=\"failed\"} 1",
                "sundial_execution_duration_seconds_bucket{job=\"snapshot\",le=\"1\"} 0",
                "sundial_execution_duration_seconds_bucket{job=\"snapshot\",le=\"2.5\"} 1",
                "sundial_execution_duration_seconds_count{job=\"snapshot\"} 1",
                "sundial_fire_lateness_seconds_bucket{le=\"0.0025\"} 0",
                "sundial_fire_lateness_seconds_bucket{le=\"0.005\"} 1",
                "sundial_running_executions{job=\"snapshot\"} 0",
            ],
        );
    }

    #[test]
    fn reloads_become_a_histogram() {
        let m = Metrics::new();
        for took_us in [400, 900, 203_000] {
            m.record(&Event::JobReloaded { job: "snapshot".into(), version: 2, digest: "ab".into(), took_us });
        }
        let text = m.render(&[], true, "0.1.0");
        has_lines(
            &text,
            &[
                "sundial_reload_seconds_bucket{le=\"0.0005\"} 1",
                "sundial_reload_seconds_bucket{le=\"0.001\"} 2",
                "sundial_reload_seconds_bucket{le=\"0.05\"} 2",
                "sundial_reload_seconds_bucket{le=\"0.25\"} 3",
                "sundial_reload_seconds_count 3",
            ],
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
