//! Webhook notifications against a real HTTP receiver on 127.0.0.1: the
//! expected notices and no others, a refused delivery retried, filters by
//! event and job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::Value;
use sundial::model::{ExecutionStatus, RunArgs};

use crate::helpers::*;

/// What the receiver saw: `(path, status answered, body)`.
type Seen = Arc<Mutex<Vec<(String, u16, Value)>>>;

/// Answers 500 to the very first request, 200 to the rest.
async fn receiver() -> (String, Seen, actix_web::dev::ServerHandle) {
    let seen: Seen = Arc::default();
    let state = web::Data::new(seen.clone());
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).default_service(web::to(
            |req: actix_web::HttpRequest, body: web::Bytes, seen: web::Data<Seen>| async move {
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let mut seen = seen.lock().unwrap();
                let status = if seen.is_empty() { 500 } else { 200 };
                seen.push((req.path().to_string(), status, json));
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
            },
        ))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (format!("http://{addr}"), seen, handle)
}

fn accepted(seen: &Seen, path: &str) -> Vec<(String, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(p, status, _)| p == path && *status == 200)
        .map(|(_, _, v)| (v["event"].as_str().unwrap_or("").to_string(), v["job"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[actix_rt::test]
async fn webhooks_get_failures_partials_recoveries_and_overruns_once_each() {
    let (base, seen, server) = receiver().await;
    let env = Env::new(&["faulty", "flaky-items", "slow-items"]).config(&format!(
        r#"[jobs.flaky-items]
           database = "read-write"
           [jobs.slow-items]
           database = "read-write"
           args = {{ delay_ms = "40" }}
           expected_duration_secs = 1
           [[webhooks]]
           url = "{base}/all"
           [[webhooks]]
           url = "{base}/faulty-failures"
           events = ["failed"]
           jobs = ["faulty"]"#
    ));
    env.seed_demo(30, t("2026-11-22T10:00:00Z")).await;
    let conn = env.app();
    conn.execute_batch(
        "CREATE TABLE processed (user_id INTEGER PRIMARY KEY); CREATE TABLE visits (user_id INTEGER, execution_id INTEGER);",
    )
    .unwrap();
    let host = env.host(true).await;
    let run = |job: &'static str, mode: Option<&'static str>| {
        let host = host.clone();
        async move {
            let args = RunArgs {
                args: mode.map(|m| vec![("mode".to_string(), m.to_string())]).unwrap_or_default(),
                ..RunArgs::default()
            };
            host.run_now(job, args).await.unwrap()
        }
    };

    // A first success: nothing to say.
    assert_eq!(run("faulty", Some("ok")).await.status, ExecutionStatus::Succeeded);
    // A failure (the first delivery is refused with 500, then retried).
    let failed = run("faulty", Some("fatal")).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    // A recovery.
    assert_eq!(run("faulty", Some("ok")).await.status, ExecutionStatus::Succeeded);
    // Another success: no longer news.
    assert_eq!(run("faulty", Some("ok")).await.status, ExecutionStatus::Succeeded);
    // A partial item run.
    assert_eq!(run("flaky-items", None).await.status, ExecutionStatus::Partial);
    // A run past its expected duration of 1 s (30 users, 40 ms each).
    assert_eq!(run("slow-items", None).await.status, ExecutionStatus::Succeeded);

    let all = eventually("four notices delivered", || async {
        let a = accepted(&seen, "/all");
        (a.len() >= 4).then_some(a)
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(1500)).await; // nothing else arrives
    let mut all_now = accepted(&seen, "/all");
    all_now.sort();
    let mut want: Vec<(String, String)> =
        [("failed", "faulty"), ("overrun", "slow-items"), ("partial", "flaky-items"), ("recovered", "faulty")]
            .iter()
            .map(|(e, j)| (e.to_string(), j.to_string()))
            .collect();
    want.sort();
    assert_eq!(all_now, want, "first seen: {all:?}");
    assert_eq!(accepted(&seen, "/faulty-failures"), [("failed".to_string(), "faulty".to_string())]);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].1, 500, "the first delivery was refused");
    let retried = seen.iter().filter(|(p, _, v)| p == &seen[0].0 && v["event"] == seen[0].2["event"]).count();
    assert_eq!(retried, 2, "refused once, delivered on the retry");
    // The payload says what happened.
    let (_, _, body) = seen.iter().find(|(p, s, v)| p == "/all" && *s == 200 && v["event"] == "failed").unwrap();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error_class"], "fatal");
    assert!(body["error"].as_str().unwrap().contains("failed on purpose"), "{body}");
    assert_eq!(body["host"], host.node.as_str());
    let (_, _, partial) = seen.iter().find(|(_, _, v)| v["event"] == "partial").unwrap();
    assert!(partial["items"]["failed"].as_i64().unwrap() > 0, "{partial}");
    let (_, _, overrun) = seen.iter().find(|(_, _, v)| v["event"] == "overrun").unwrap();
    assert_eq!(overrun["expected_secs"], 1);
    host.stop().await;
    server.stop(true).await;
}

/// A webhook URL that is not http(s) is refused at load with the section named.
#[test]
fn a_bad_webhook_url_is_refused_at_load() {
    let err = sundial::config::Config::parse("[[webhooks]]\nurl = \"ftp://example.com/x\"").unwrap_err();
    assert!(err.contains("[[webhooks]]") && err.contains("http://"), "{err}");
    let err = sundial::config::Config::parse("[[webhooks]]\nurl = \"https://x\"\nevents = [\"exploded\"]").unwrap_err();
    assert!(err.contains("exploded"), "{err}");
    let err =
        sundial::config::Config::parse("[[webhooks]]\nurl = \"https://user:pw@hooks.example.com/x\"").unwrap_err();
    assert!(err.contains("credentials in the URL are not supported"), "{err}");
}
