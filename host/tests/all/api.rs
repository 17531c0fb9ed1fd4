//! The HTTP API over a real socket, as an operator's script or the UI uses
//! it: every endpoint and its error paths, the security defaults, and
//! concurrent run-now requests against the overlap gate.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sundial::api::{self, ApiOptions};
use sundial::host::Host;

use crate::helpers::*;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A host with the API on an ephemeral port.
pub struct Api {
    pub base: String,
    pub host: Host,
    client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
}

impl Api {
    pub async fn start(env: &Env, schedule: bool) -> Api {
        let host = env.host(schedule).await;
        Api::serve(host, "127.0.0.1:0").await
    }

    pub async fn serve(host: Host, addr: &str) -> Api {
        let serving = api::serve(host.clone(), addr, Some(TOKEN.into())).unwrap();
        let handle = serving.server.handle();
        actix_rt::spawn(serving.server);
        Api { base: format!("http://{}", serving.addr), host, client: reqwest::Client::new(), handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the token.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(TOKEN)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        send(r).await
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
        v
    }

    /// Waits until the execution has a final status and returns it.
    pub async fn finished(&self, id: i64) -> Value {
        eventually(&format!("execution {id} to finish"), || async {
            let e = self.get(&format!("/api/scheduler/executions/{id}")).await;
            (e["finished_at"] != Value::Null).then_some(e)
        })
        .await
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.host.stop().await;
    }
}

async fn send(r: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = r.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, v)
}

/// cleanup, faulty and slow-items on 50 demo users; slow-items takes
/// `delay_ms` per user.
async fn env_with_users(delay_ms: u32) -> Env {
    let env = Env::new(&["cleanup", "faulty", "slow-items"]).config(&format!(
        "[jobs.cleanup]\ndatabase = \"read-write\"\n\
         [jobs.slow-items]\ndatabase = \"read-write\"\nargs = {{ delay_ms = \"{delay_ms}\" }}"
    ));
    env.seed_demo(50, chrono::Utc::now()).await;
    env.app().execute_batch("CREATE TABLE visits (user_id INTEGER, execution_id INTEGER);").unwrap();
    env
}

#[actix_rt::test]
async fn status_jobs_and_job_detail_describe_the_host() {
    let env = env_with_users(0).await;
    let api = Api::start(&env, true).await;

    let health = api.get("/healthz").await;
    assert_eq!(health["status"], "ok");

    let status = api.get("/api/scheduler/status").await;
    assert_eq!(status["enabled"], true);
    assert_eq!(status["scheduling"], true);
    assert_eq!(status["jobs"], 3);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let next: Vec<&str> = status["next_fires"].as_array().unwrap().iter().map(|f| f["job"].as_str().unwrap()).collect();
    assert!(next.contains(&"cleanup"), "{status}");

    let jobs = api.get("/api/scheduler/jobs").await;
    let names: Vec<&str> = jobs["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cleanup", "faulty", "slow-items"]);
    let cleanup = &jobs["jobs"][0];
    assert_eq!(cleanup["schedule"], "15 3 * * *");
    assert_eq!(cleanup["schedule_text"], "At 03:15 every day");
    assert_eq!(cleanup["kind"], "single");
    assert_eq!(cleanup["version"], 1);
    assert_eq!(cleanup["last_status"], Value::Null);
    assert!(cleanup["next_run_at"].as_str().unwrap().ends_with("03:15:00Z"), "{cleanup}");
    assert_eq!(jobs["jobs"][2]["kind"], "items");

    let detail = api.get("/api/scheduler/jobs/cleanup").await;
    assert_eq!(detail["grants"]["database"], "read-write");
    assert_eq!(detail["grants"]["http"], json!([]));
    assert_eq!(detail["policies"]["overlap"], "skip");
    assert_eq!(detail["schedule_source"], "configuration");
    assert_eq!(detail["versions"].as_array().unwrap().len(), 1);
    assert_eq!(detail["versions"][0]["digest"], detail["digest"]);
    assert_eq!(detail["upcoming"].as_array().unwrap().len(), 5);
    assert!(detail["limits"]["timeout_secs"].as_f64().unwrap() > 0.0);
    assert_eq!(detail["limits"]["fuel"], Value::Null, "no budget unless granted");
    // The numeric id works as well as the name.
    let id = api.host.store.get_job("cleanup").await.unwrap().unwrap().id.0;
    assert_eq!(api.get(&format!("/api/scheduler/jobs/{id}")).await["name"], "cleanup");

    let (status, err) = api.call(Method::GET, "/api/scheduler/jobs/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap().contains("unknown job \"nope\""), "{err}");
    let (status, err) = api.call(Method::GET, "/api/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap().contains("no such endpoint"), "{err}");
    api.stop().await;
}

#[actix_rt::test]
async fn runs_start_finish_and_page_through_history() {
    let env = env_with_users(0).await;
    let api = Api::start(&env, false).await;

    let (status, run) = api.call(Method::POST, "/api/scheduler/jobs/cleanup/run", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let first = run["execution_id"].as_i64().unwrap();
    let e = api.finished(first).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["trigger"], "manual");
    assert_eq!(e["progress"], Value::Null);
    assert!(e["logs"].is_string() && e["problems"].is_array(), "{e}");
    assert_eq!(e["fuel_consumed"], Value::Null, "no job has a budget: fuel is not metered: {e}");

    // Options reach the run; a failure carries its class and message.
    let (status, run) = api
        .call(Method::POST, "/api/scheduler/jobs/faulty/run", Some(json!({"args": {"mode": "fatal"}, "dry_run": true})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let e = api.finished(run["execution_id"].as_i64().unwrap()).await;
    assert_eq!(e["status"], "failed");
    assert_eq!(e["error_class"], "fatal");
    assert!(e["error_message"].as_str().unwrap().contains("the fixture failed on purpose"), "{e}");
    assert_eq!(e["args"]["dry_run"], true);
    assert_eq!(e["args"]["args"]["mode"], "fatal");

    // An item run: counts, and the limit honoured.
    let (_, run) = api.call(Method::POST, "/api/scheduler/jobs/slow-items/run", Some(json!({"limit": 7}))).await;
    let e = api.finished(run["execution_id"].as_i64().unwrap()).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["items"], json!({"total": 7, "ok": 7, "skipped": 0, "failed": 0}));

    for _ in 0..2 {
        let (_, run) = api.call(Method::POST, "/api/scheduler/jobs/cleanup/run", None).await;
        api.finished(run["execution_id"].as_i64().unwrap()).await;
    }
    // Three cleanup executions, two per page, newest first.
    let page = api.get("/api/scheduler/jobs/cleanup/executions?limit=2").await;
    let ids: Vec<i64> = page["executions"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] > ids[1]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page = api.get(&format!("/api/scheduler/jobs/cleanup/executions?limit=2&before={cursor}")).await;
    let rest: Vec<i64> = page["executions"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(rest, [first]);
    assert_eq!(page["next_cursor"], Value::Null);
    // Page size is capped.
    assert_eq!(api.get("/api/scheduler/jobs/cleanup/executions?limit=100000").await["limit"], 200);

    let jobs = api.get("/api/scheduler/jobs").await;
    assert_eq!(jobs["jobs"][0]["last_status"], "succeeded");

    // Bad input: clear 4xx messages.
    let bad = [
        (
            Method::POST,
            "/api/scheduler/jobs/cleanup/run",
            Some(json!({"date": "2026-02-30"})),
            400,
            "date: expected YYYY-MM-DD",
        ),
        (Method::POST, "/api/scheduler/jobs/cleanup/run", Some(json!({"limit": 0})), 400, "limit: must be at least 1"),
        (Method::POST, "/api/scheduler/jobs/cleanup/run", Some(json!({"lmit": 3})), 400, "unknown field `lmit`"),
        (Method::POST, "/api/scheduler/jobs/nope/run", None, 404, "unknown job"),
        (Method::GET, "/api/scheduler/executions/abc", None, 400, "positive number"),
        (Method::GET, "/api/scheduler/executions/999999", None, 404, "unknown execution 999999"),
        (Method::POST, &format!("/api/scheduler/executions/{first}/cancel"), None, 409, "is not running"),
        (Method::GET, "/api/scheduler/jobs/cleanup/executions?limit=x", None, 400, "invalid query string"),
    ];
    for (method, path, body, code, message) in bad {
        let (status, err) = api.call(method.clone(), path, body).await;
        assert_eq!(status.as_u16(), code, "{method} {path}: {err}");
        assert!(err["error"].as_str().unwrap().contains(message), "{method} {path}: {err}");
    }
    let (status, err) = send(
        api.req(Method::PUT, "/api/scheduler/enabled")
            .header("content-type", "application/json")
            .body("{\"enabled\": "),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().starts_with("invalid JSON body"), "{err}");
    api.stop().await;
}

#[actix_rt::test]
async fn switches_and_schedules_change_at_once_and_survive_a_restart() {
    let env = env_with_users(0).await;
    let api = Api::start(&env, true).await;

    let (status, job) =
        api.call(Method::PUT, "/api/scheduler/jobs/cleanup/enabled", Some(json!({"enabled": false}))).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["enabled"], false);
    assert_eq!(job["next_run_at"], Value::Null, "a disabled job has no next run");

    let (status, err) =
        api.call(Method::PUT, "/api/scheduler/jobs/cleanup/schedule", Some(json!({"schedule": "0 25 * * *"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "hour: 25 is out of range 0-23");
    let (status, err) = api
        .call(
            Method::PUT,
            "/api/scheduler/jobs/cleanup/schedule",
            Some(json!({"schedule": "0 3 * * *", "timezone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().contains("unknown time zone \"Mars/Olympus\""), "{err}");
    let (status, err) =
        api.call(Method::PUT, "/api/scheduler/jobs/cleanup/schedule", Some(json!({"schedule": "0 0 30 2 *"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().starts_with("never fires"), "{err}");

    let (status, job) = api
        .call(
            Method::PUT,
            "/api/scheduler/jobs/cleanup/schedule",
            Some(json!({"schedule": "30 2 * * *", "timezone": "Asia/Tokyo"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["schedule"], "30 2 * * *");
    assert_eq!(job["timezone"], "Asia/Tokyo");
    assert_eq!(job["schedule_source"], "api");
    assert!(job["upcoming"][0].as_str().unwrap().ends_with("17:30:00Z"), "02:30 in Tokyo: {job}");

    let (_, status) = api.call(Method::PUT, "/api/scheduler/enabled", Some(json!({"enabled": false}))).await;
    assert_eq!(status["enabled"], false);
    assert_eq!(status["next_fires"], json!([]));
    api.stop().await;

    // A restart keeps the switches and the operator's schedule.
    let api = Api::start(&env, true).await;
    let job = api.get("/api/scheduler/jobs/cleanup").await;
    assert_eq!((job["enabled"].clone(), job["schedule"].clone()), (json!(false), json!("30 2 * * *")));
    assert_eq!(job["timezone"], "Asia/Tokyo");
    assert_eq!(api.get("/api/scheduler/status").await["enabled"], false);

    let (status, job) = api.call(Method::DELETE, "/api/scheduler/jobs/cleanup/schedule", None).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!((job["schedule"].clone(), job["timezone"].clone()), (json!("15 3 * * *"), json!("UTC")));
    assert_eq!(job["schedule_source"], "configuration");
    let (_, job) = api.call(Method::PUT, "/api/scheduler/jobs/cleanup/enabled", Some(json!({"enabled": true}))).await;
    assert_eq!(job["enabled"], true);
    api.call(Method::PUT, "/api/scheduler/enabled", Some(json!({"enabled": true}))).await;
    assert!(api.get("/api/scheduler/jobs/cleanup").await["next_run_at"].is_string());
    api.stop().await;
}

#[actix_rt::test]
async fn the_default_configuration_is_locked_down() {
    let env = env_with_users(0).await;
    let api = Api::start(&env, false).await;
    let client = reqwest::Client::new();
    let run = api.url("/api/scheduler/jobs/cleanup/run");

    // No token, a wrong token: 401, nothing runs.
    let (status, err) = send(client.post(&run)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(err["error"].as_str().unwrap().contains("Authorization: Bearer"), "{err}");
    let (status, _) = send(client.post(&run).bearer_auth("test-token-0123456789abcdeX")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(client.put(api.url("/api/scheduler/enabled")).json(&json!({"enabled": false}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(api.host.store.list_executions("cleanup", 10, None).await.unwrap().is_empty());
    assert_eq!(api.get("/api/scheduler/status").await["enabled"], true);

    // DNS rebinding: a foreign Host is refused, reads included.
    let (status, err) = send(client.get(api.url("/api/scheduler/jobs")).header("host", "attacker.example")).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(err["error"].as_str().unwrap().contains("\"attacker.example\" is not allowed"), "{err}");
    // CSRF: a cross-site Origin is refused even with the token.
    let (status, err) =
        send(api.req(Method::POST, "/api/scheduler/jobs/cleanup/run").header("origin", "http://attacker.example"))
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(err["error"].as_str().unwrap().contains("cross-origin"), "{err}");
    // The UI's own origin is fine.
    let own = api.base.clone();
    let (status, _) = send(api.req(Method::POST, "/api/scheduler/jobs/cleanup/run").header("origin", own)).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Bodies are bounded.
    let big = json!({"args": {"k": "x".repeat(100 * 1024)}});
    let (status, err) = api.call(Method::POST, "/api/scheduler/jobs/cleanup/run", Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");

    // Replies carry the security headers.
    let res = client.get(api.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert!(res.text().await.unwrap().contains(r#"src="ui/app.js""#));
    api.stop().await;

    // A public address needs a token, and a real one.
    let host = env.host(false).await;
    let e = api::serve(host.clone(), "0.0.0.0:0", None).err().unwrap();
    assert!(e.to_string().contains("without a token"), "{e}");
    let e = api::serve(host.clone(), "127.0.0.1:0", Some("short".into())).err().unwrap();
    assert!(e.to_string().contains("too short"), "{e}");
    // Loopback without a token: one is made up, so state changes stay closed.
    let serving = api::serve(host.clone(), "127.0.0.1:0", None).unwrap();
    assert!(serving.generated_token && serving.token.len() >= 32);
    assert!(serving.addr.ip().is_loopback());
    drop(serving);
    host.stop().await;
}

#[actix_rt::test]
async fn reads_need_the_token_when_asked_to() {
    let env = env_with_users(0).await;
    let host = env.host(false).await;
    let mut options = ApiOptions::with_token(TOKEN);
    options.reads_need_token = true;
    options.allowed_hosts = vec!["sundial.internal".into()];
    let routes = api::configure(host.clone(), options);
    let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let client = reqwest::Client::new();
    let (status, _) = send(client.get(format!("{base}/api/scheduler/jobs"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, jobs) = send(client.get(format!("{base}/api/scheduler/jobs")).bearer_auth(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 3);
    let (status, _) = send(client.get(format!("{base}/healthz")).header("host", "sundial.internal:443")).await;
    assert_eq!(status, StatusCode::OK, "health needs no token, and listed hosts are answered");
    handle.stop(true).await;
    host.stop().await;
}

/// Overlap `skip`: of 100 simultaneous run-now requests exactly one starts;
/// the others get 409 naming the running execution (once it has an id).
#[actix_rt::test]
async fn a_hundred_concurrent_run_requests_start_exactly_one_execution() {
    let env = env_with_users(20).await;
    let api = Api::start(&env, false).await;
    let requests = (0..100).map(|_| api.call(Method::POST, "/api/scheduler/jobs/slow-items/run", None));
    let replies = futures_util::future::join_all(requests).await;
    let started: Vec<&Value> = replies.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).map(|(_, v)| v).collect();
    assert_eq!(started.len(), 1, "{replies:?}");
    let id = started[0]["execution_id"].as_i64().unwrap();
    for (status, v) in &replies {
        if *status != StatusCode::ACCEPTED {
            assert_eq!(*status, StatusCode::CONFLICT, "{v}");
            assert!(v["error"].as_str().unwrap().contains("already running"), "{v}");
            assert!(v["active_execution_id"] == json!(id) || v["active_execution_id"].is_null(), "{v}");
        }
    }
    // Cancel it: it ends cancelled, and only that one execution exists.
    let (status, v) = api.call(Method::POST, &format!("/api/scheduler/executions/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let e = api.finished(id).await;
    assert_eq!(e["status"], "cancelled");
    assert_eq!(api.host.store.list_executions("slow-items", 200, None).await.unwrap().len(), 1);
    api.stop().await;
}

/// The event stream reports a run's start, its progress against the total
/// the job reported, and its end; `/metrics` counts it.
#[actix_rt::test]
async fn events_stream_progress_and_metrics_count_runs() {
    let env = env_with_users(40).await;
    let api = Api::start(&env, false).await;
    let res = api.client.get(api.url("/api/scheduler/events")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();

    let (_, run) = api.call(Method::POST, "/api/scheduler/jobs/slow-items/run", None).await;
    let id = run["execution_id"].as_i64().unwrap();
    let mut text = String::new();
    let mut progress: Vec<(u64, Option<u64>)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !text.contains("event: execution_finished") {
        assert!(std::time::Instant::now() < deadline, "no finish event in {text}");
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    for block in text.split("\n\n") {
        if let Some(data) = block.strip_prefix("event: execution_progress\ndata: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["id"], id);
            progress.push((v["done"].as_u64().unwrap(), v["total"].as_u64()));
        }
    }
    assert!(text.contains("event: execution_started\ndata: {\"type\":\"execution_started\""), "{text}");
    assert!(!progress.is_empty(), "50 users at 40 ms each take 2 s: {text}");
    assert!(progress.iter().all(|(done, total)| *total == Some(50) && *done <= 50), "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0), "progress only moves forward: {progress:?}");
    let finished = text.split("\n\n").find(|b| b.starts_with("event: execution_finished")).unwrap();
    assert!(finished.contains("\"status\":\"succeeded\""), "{finished}");

    let metrics = api.client.get(api.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "sundial_executions_total{job=\"slow-items\",status=\"succeeded\"} 1",
        "sundial_items_total{job=\"slow-items\",outcome=\"ok\"} 50",
        "sundial_execution_duration_seconds_count{job=\"slow-items\"} 1",
        "sundial_job_enabled{job=\"cleanup\"} 1",
        "sundial_up 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    api.stop().await;
}

/// Deploy: a valid component goes live (and into the jobs directory); an
/// invalid one changes nothing and says why.
#[actix_rt::test]
async fn deploy_validates_like_the_loader_and_puts_the_job_live() {
    let env = Env::new(&["cleanup"]);
    let api = Api::start(&env, false).await;
    let upload = |bytes: Vec<u8>| {
        api.req(Method::POST, "/api/scheduler/deploy").header("content-type", "application/wasm").body(bytes)
    };

    let (status, err) = send(upload(b"\0asm not really".to_vec())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err["error"].as_str().unwrap().contains("not a WebAssembly component"), "{err}");
    let (status, err) = send(upload(Vec::new())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(std::fs::read_dir(env.jobs_dir()).unwrap().count(), 1, "nothing written");

    let faulty = std::fs::read(wasm("faulty")).unwrap();
    let (status, deployed) = send(upload(faulty.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{deployed}");
    assert_eq!(deployed["job"], "faulty");
    assert_eq!(deployed["version"], 1);
    assert_eq!(deployed["digest"], digest(&wasm("faulty")));
    assert_eq!(std::fs::read(env.jobs_dir().join("faulty.wasm")).unwrap(), faulty, "kept for restarts");
    let (status, run) =
        api.call(Method::POST, "/api/scheduler/jobs/faulty/run", Some(json!({"args": {"mode": "ok"}}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(api.finished(run["execution_id"].as_i64().unwrap()).await["status"], "succeeded");

    // The same bytes again: the same version.
    let (_, again) = send(upload(faulty.clone())).await;
    assert_eq!(again["version"], 1);

    // Rollback: refused while there is nothing earlier; after a second
    // version, back to the first, listed in the job's versions.
    let (status, err) = api.call(Method::POST, "/api/scheduler/jobs/faulty/rollback", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(err["error"].as_str().unwrap().contains("no earlier version"), "{err}");
    let v2 = crate::fixtures::variant(&faulty, "v2");
    let (status, deployed) = send(upload(v2)).await;
    assert_eq!((status, deployed["version"].as_i64()), (StatusCode::CREATED, Some(2)), "{deployed}");
    let (status, err) = api.call(Method::POST, "/api/scheduler/jobs/faulty/rollback", Some(json!({"to": 7}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err) =
        api.call(Method::POST, "/api/scheduler/jobs/faulty/rollback", Some(json!({"to": "nope"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, done) = api.call(Method::POST, "/api/scheduler/jobs/faulty/rollback", Some(json!({"to": 1}))).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!((done["from_version"].as_i64(), done["to_version"].as_i64()), (Some(2), Some(1)), "{done}");
    assert_eq!(done["version"], 3);
    assert_eq!(done["digest"], digest(&wasm("faulty")));
    let detail = api.get("/api/scheduler/jobs/faulty").await;
    let versions = detail["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{detail}");
    assert!(versions.iter().all(|v| v["kept"] == true), "{detail}");
    assert_eq!(std::fs::read(env.jobs_dir().join("faulty.wasm")).unwrap(), faulty);
    api.stop().await;
}

#[actix_rt::test]
async fn the_openapi_description_lists_every_endpoint() {
    let env = Env::new(&["cleanup"]);
    let api = Api::start(&env, false).await;
    let doc = api.get("/api/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/api/scheduler/status", "get"),
        ("/api/scheduler/enabled", "put"),
        ("/api/scheduler/jobs", "get"),
        ("/api/scheduler/jobs/{id}", "get"),
        ("/api/scheduler/jobs/{id}/enabled", "put"),
        ("/api/scheduler/jobs/{id}/schedule", "put"),
        ("/api/scheduler/jobs/{id}/schedule", "delete"),
        ("/api/scheduler/jobs/{id}/run", "post"),
        ("/api/scheduler/jobs/{id}/rollback", "post"),
        ("/api/scheduler/jobs/{id}/executions", "get"),
        ("/api/scheduler/executions/{id}", "get"),
        ("/api/scheduler/executions/{id}/cancel", "post"),
        ("/api/scheduler/deploy", "post"),
        ("/api/scheduler/events", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not described");
    }
    api.stop().await;
}
