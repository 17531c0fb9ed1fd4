//! The operator UI in a real browser: Debian's chromium, headless, driven
//! through chromedriver (WebDriver). The test opens the UI with the token in
//! the address, runs a per-item job, watches its progress bar advance and its
//! status reach `succeeded`, checks guest output stays text, switches a job
//! off and on, and saves screenshots
//! to the directory it prints.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::api::Api;
use crate::helpers::*;

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/install-browser.sh installs it)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `css` until `check` accepts the element's text and attributes.
async fn wait_for<T>(
    browser: &Client,
    what: &str,
    css: &str,
    mut check: impl FnMut(&str, Option<String>) -> Option<T>,
    attr: &str,
) -> T {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(el) = browser.find(Locator::Css(css)).await {
            let text = el.text().await.unwrap_or_default();
            let value = if attr.is_empty() { None } else { el.attr(attr).await.ok().flatten() };
            if let Some(v) = check(&text, value.clone()) {
                return v;
            }
            last = format!("text {text:?}, {attr} {value:?}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what} ({css}): last {last}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks `css` once it is there. The page re-renders on live updates, so
/// the element found may be replaced before the click lands: find it again.
async fn click(browser: &Client, css: &str) {
    let start = Instant::now();
    loop {
        wait_for(browser, css, css, |_, _| Some(()), "").await;
        match browser.find(Locator::Css(css)).await {
            Ok(el) => match el.click().await {
                Ok(_) => return,
                Err(e) => assert!(start.elapsed() < Duration::from_secs(30), "cannot click {css}: {e}"),
            },
            Err(e) => assert!(start.elapsed() < Duration::from_secs(30), "cannot find {css}: {e}"),
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Shots(PathBuf);

impl Shots {
    fn new() -> Shots {
        let dir = root().join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        println!("UI screenshots: {}", dir.display());
        Shots(dir)
    }

    async fn take(&self, browser: &Client, name: &str) {
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.0.join(format!("{name}.png")), png).unwrap();
    }
}

#[actix_rt::test]
async fn the_ui_runs_a_job_with_a_moving_progress_bar_and_switches_jobs() {
    let env = Env::new(&["cleanup", "faulty", "slow-items"]).config(
        "[jobs.cleanup]\ndatabase = \"read-write\"\n\
         [jobs.slow-items]\ndatabase = \"read-write\"\nargs = { delay_ms = \"80\" }",
    );
    env.seed_demo(50, chrono::Utc::now()).await;
    env.app().execute_batch("CREATE TABLE visits (user_id INTEGER, execution_id INTEGER);").unwrap();
    let api = Api::start(&env, true).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    let shots = Shots::new();

    // The token arrives in the fragment and leaves the address bar.
    browser.goto(&format!("{}/#token={}", api.base, crate::api::TOKEN)).await.unwrap();
    wait_for(&browser, "the job list", "tr[data-job='slow-items']", |t, _| t.contains("slow-items").then_some(()), "")
        .await;
    assert!(!browser.current_url().await.unwrap().as_str().contains("token"), "token removed from the address");
    wait_for(&browser, "the live stream", "#live-indicator", |t, _| (t == "live").then_some(()), "").await;
    wait_for(&browser, "the scheduler state", "#scheduler-state", |t, _| t.contains("enabled").then_some(()), "").await;
    shots.take(&browser, "1-dashboard").await;

    // Run the item job from its page; the progress bar moves while it runs.
    browser.goto(&format!("{}/#/jobs/slow-items", api.base)).await.unwrap();
    click(&browser, "button.job-run").await;
    let toast = wait_for(
        &browser,
        "the run's toast",
        ".toast.toast-success",
        |t, _| t.starts_with("Started execution #").then(|| t.to_string()),
        "",
    )
    .await;
    let id: i64 = toast.trim_start_matches("Started execution #").trim().parse().unwrap();
    let bar = format!("tr[data-execution='{id}'] .progress-fill");
    let first = wait_for(
        &browser,
        "progress under way",
        &bar,
        |_, now| now.and_then(|v| v.parse::<u64>().ok()).filter(|v| (1..50).contains(v)),
        "aria-valuenow",
    )
    .await;
    let row = format!("tr[data-execution='{id}']");
    browser
        .execute("document.querySelector(arguments[0]).scrollIntoView({block: 'center'})", vec![json!(row)])
        .await
        .unwrap();
    let max = browser.find(Locator::Css(&bar)).await.unwrap().attr("aria-valuemax").await.unwrap();
    assert_eq!(max.as_deref(), Some("50"), "the total the job reported");
    shots.take(&browser, "2-progress").await;
    let later = wait_for(
        &browser,
        "the bar to advance",
        &bar,
        |_, now| now.and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > first),
        "aria-valuenow",
    )
    .await;
    assert!(later > first);
    let status = format!("tr[data-execution='{id}'] .execution-status");
    wait_for(&browser, "the run to succeed", &status, |t, _| (t == "succeeded").then_some(()), "").await;
    shots.take(&browser, "3-succeeded").await;
    let e = api.get(&format!("/api/scheduler/executions/{id}")).await;
    assert_eq!(e["status"], "succeeded");
    assert_eq!(e["items"]["ok"], 50);

    // The execution's own page.
    browser.goto(&format!("{}/#/executions/{id}", api.base)).await.unwrap();
    wait_for(&browser, "the execution page", ".execution-status", |t, _| (t == "succeeded").then_some(()), "").await;
    browser.find(Locator::Css("#execution-logs")).await.unwrap();
    shots.take(&browser, "4-execution").await;

    // Guest output is text, never markup.
    let hostile = r#"<img src=x onerror="document.title='pwned'"><b id="injected">bold</b>"#;
    let (_, run) = api
        .call(reqwest::Method::POST, "/api/scheduler/jobs/faulty/run", Some(json!({"args": {"mode": hostile}})))
        .await;
    let bad = run["execution_id"].as_i64().unwrap();
    assert_eq!(api.finished(bad).await["status"], "failed");
    browser.goto(&format!("{}/#/executions/{bad}", api.base)).await.unwrap();
    let logs = wait_for(
        &browser,
        "the hostile logs",
        "#execution-logs",
        |t, _| t.contains("<b id=\"injected\">").then(|| t.to_string()),
        "",
    )
    .await;
    assert!(logs.contains(hostile), "{logs}");
    assert!(browser.find(Locator::Css("#injected")).await.is_err(), "guest output became markup");
    assert!(browser.find(Locator::Css("main img")).await.is_err(), "guest output became markup");
    assert_ne!(browser.title().await.unwrap(), "pwned");
    shots.take(&browser, "5-escaped").await;

    // Switch cleanup off and on from the dashboard.
    browser.goto(&format!("{}/#/", api.base)).await.unwrap();
    let toggle = "tr[data-job='cleanup'] button.job-toggle";
    let state = "tr[data-job='cleanup'] .job-enabled";
    wait_for(&browser, "cleanup enabled", state, |t, _| (t == "enabled").then_some(()), "").await;
    click(&browser, toggle).await;
    wait_for(&browser, "cleanup disabled", state, |t, _| (t == "disabled").then_some(()), "").await;
    wait_for(&browser, "a confirmation", ".toast.toast-success", |t, _| t.contains("disabled").then_some(()), "").await;
    assert_eq!(api.get("/api/scheduler/jobs/cleanup").await["enabled"], false);
    shots.take(&browser, "6-disabled").await;
    click(&browser, toggle).await;
    wait_for(&browser, "cleanup enabled again", state, |t, _| (t == "enabled").then_some(()), "").await;
    assert_eq!(api.get("/api/scheduler/jobs/cleanup").await["enabled"], true);
    shots.take(&browser, "7-enabled").await;

    // Roll cleanup back from its page after a second version went live.
    let v2 = crate::fixtures::variant(&std::fs::read(crate::helpers::wasm("cleanup")).unwrap(), "v2");
    let deployed = api
        .req(reqwest::Method::POST, "/api/scheduler/deploy")
        .header("content-type", "application/wasm")
        .body(v2)
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201);
    browser.goto(&format!("{}/#/jobs/cleanup", api.base)).await.unwrap();
    wait_for(&browser, "v2 current", "tr[data-version='2']", |t, _| t.contains("(current)").then_some(()), "").await;
    click(&browser, "tr[data-version='1'] button.version-rollback").await;
    wait_for(
        &browser,
        "the rollback's confirmation",
        ".toast.toast-success",
        |t, _| t.contains("the code of v1 is live again as v3").then_some(()),
        "",
    )
    .await;
    wait_for(&browser, "v3 current", "tr[data-version='3']", |t, _| t.contains("(current)").then_some(()), "").await;
    assert_eq!(api.get("/api/scheduler/jobs/cleanup").await["version"], 3);
    shots.take(&browser, "8-rolled-back").await;

    browser.close().await.unwrap();
    api.stop().await;
}
