//! An application that embeds Sundial: a small notes service (actix-web and
//! sqlx) that adds scheduled jobs to itself in a few lines.
//!
//! - Sundial keeps its tables in the application's own SQLite database and
//!   reads through the application's own pool.
//! - Sundial's API and UI are mounted under `/sundial/` on the application's
//!   own HTTP server, beside its routes.
//! - `notes-digest` is a native job (Rust, in-process): every night it counts
//!   the day's notes into `note_digests`. It is scheduled, recorded and shown
//!   exactly like the WebAssembly components dropped into the jobs directory.
//! - SIGINT or SIGTERM stops the server, then the host, which gives running
//!   executions a grace period to finish.
//!
//! ```text
//! cargo run -p sundial-host --example embedded -- --data /tmp/notes
//! curl -X POST localhost:8090/notes -H 'content-type: application/json' -d '{"text":"hello"}'
//! curl -X POST localhost:8090/sundial/api/scheduler/jobs/notes-digest/run \
//!      -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{}'
//! curl localhost:8090/digests
//! ```
//!
//! The token is `SUNDIAL_API_TOKEN`, or a random one printed at start.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use serde::Deserialize;
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;
use sundial::api::ApiOptions;
use sundial::config::Config;
use sundial::host::Host;
use sundial::model::{Capability, DbAccess, JobInfo, JobKind};
use sundial::runtime::{NativeContext, NativeError, NativeJob, NativeOutcome};
use sundial::store::appdb::SqlValue;

#[derive(Parser)]
struct Args {
    /// Where to listen (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: String,
    /// Directory for the database and the jobs directory.
    #[arg(long, default_value = "notes-data")]
    data: PathBuf,
    /// Directory of `*.wasm` job components (default `<data>/jobs`).
    #[arg(long)]
    jobs_dir: Option<PathBuf>,
    /// Sundial's settings (`sundial.toml` syntax) instead of the built-in
    /// ones, which grant `notes-digest` the database.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds running executions get to finish at shutdown.
    #[arg(long, default_value_t = 10)]
    grace_secs: u64,
}

/// Sundial's settings for this application's jobs, as in `sundial.toml`.
const SUNDIAL_CONFIG: &str = r#"
[jobs.notes-digest]
database = "read-write"
"#;

/// The native job: yesterday's notes, counted into `note_digests`.
struct NotesDigest;

impl NativeJob for NotesDigest {
    fn info(&self) -> JobInfo {
        JobInfo {
            name: "notes-digest".into(),
            description: "Counts each day's notes into note_digests".into(),
            kind: JobKind::Single,
            default_schedule: "5 0 * * *".into(),
            default_timezone: "UTC".into(),
            capabilities: vec![Capability::Database(DbAccess::ReadWrite)],
        }
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").into()
    }

    fn run(&self, ctx: &mut NativeContext<'_>) -> Result<NativeOutcome, NativeError> {
        // The day before the scheduled instant (a manual run counts the last 24 hours).
        let until: DateTime<Utc> = ctx.run.scheduled_for;
        let since = until - TimeDelta::days(1);
        let day = since.format("%Y-%m-%d").to_string();
        let execution = ctx.run.execution_id.0;
        let Some(db) = ctx.db.as_deref_mut() else {
            return Err(NativeError::Fatal("notes-digest needs read-write database access".into()));
        };
        let stamp = |t: DateTime<Utc>| SqlValue::Text(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
        let rows = db
            .query(
                "SELECT count(*) FROM notes WHERE created_at >= $1 AND created_at < $2",
                &[stamp(since), stamp(until)],
            )
            .map_err(|e| NativeError::Retryable(e.to_string()))?;
        let notes = match rows.rows.first().and_then(|r| r.first()) {
            Some(SqlValue::Integer(n)) => *n,
            _ => 0,
        };
        let changed = db
            .execute(
                "INSERT INTO note_digests (day, notes, execution_id) VALUES ($1, $2, $3)
                 ON CONFLICT (day) DO UPDATE SET notes = excluded.notes, execution_id = excluded.execution_id",
                &[SqlValue::Text(day.clone()), SqlValue::Integer(notes), SqlValue::Integer(execution)],
            )
            .map_err(|e| NativeError::Retryable(e.to_string()))?;
        ctx.log(&format!("{notes} notes on {day}"));
        Ok(NativeOutcome { changed, message: Some(format!("{notes} notes on {day}")) })
    }
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

async fn add_note(pool: web::Data<SqlitePool>, note: web::Json<NewNote>) -> HttpResponse {
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    match sqlx::query("INSERT INTO notes (text, created_at) VALUES ($1, $2)")
        .bind(&note.text)
        .bind(now)
        .execute(pool.get_ref())
        .await
    {
        Ok(r) => HttpResponse::Created().json(serde_json::json!({ "id": r.last_insert_rowid() })),
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({ "error": e.to_string() })),
    }
}

async fn list_notes(pool: web::Data<SqlitePool>) -> HttpResponse {
    let rows: Result<Vec<(i64, String)>, _> =
        sqlx::query_as("SELECT id, text FROM notes ORDER BY id").fetch_all(pool.get_ref()).await;
    match rows {
        Ok(rows) => HttpResponse::Ok()
            .json(rows.into_iter().map(|(id, text)| serde_json::json!({ "id": id, "text": text })).collect::<Vec<_>>()),
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({ "error": e.to_string() })),
    }
}

async fn list_digests(pool: web::Data<SqlitePool>) -> HttpResponse {
    let rows: Result<Vec<(String, i64)>, _> =
        sqlx::query_as("SELECT day, notes FROM note_digests ORDER BY day").fetch_all(pool.get_ref()).await;
    match rows {
        Ok(rows) => HttpResponse::Ok().json(
            rows.into_iter().map(|(day, notes)| serde_json::json!({ "day": day, "notes": notes })).collect::<Vec<_>>(),
        ),
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({ "error": e.to_string() })),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data).with_context(|| format!("cannot create {}", args.data.display()))?;

    // The application's own database and pool.
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new().filename(args.data.join("notes.db")).create_if_missing(true),
    )
    .await
    .context("cannot open the notes database")?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, created_at TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS note_digests (day TEXT PRIMARY KEY, notes INTEGER NOT NULL, execution_id INTEGER);",
    )
    .execute(&pool)
    .await
    .context("cannot create the notes tables")?;

    // Sundial, on the same pool, with a native job besides the components.
    let config = match &args.config {
        Some(path) => Config::load(Some(path))?,
        None => Config { base_dir: args.data.clone(), ..Config::parse(SUNDIAL_CONFIG).map_err(anyhow::Error::msg)? },
    };
    let host = Host::builder()
        .config(config)
        .database_pool(pool.clone())
        .jobs_dir(args.jobs_dir.clone().unwrap_or_else(|| args.data.join("jobs")))
        .native_job(NotesDigest)
        .start()
        .await
        .context("cannot start Sundial")?;
    let token = match std::env::var("SUNDIAL_API_TOKEN") {
        Ok(t) => sundial::api::check_token(&t)?,
        Err(_) => sundial::api::random_token()?,
    };
    let sundial_routes = host.http(ApiOptions::with_token(&token));

    // The application's server: its routes, and Sundial's under /sundial/.
    let app_pool = web::Data::new(pool.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_pool.clone())
            .route("/notes", web::post().to(add_note))
            .route("/notes", web::get().to(list_notes))
            .route("/digests", web::get().to(list_digests))
            .service(web::scope("/sundial").configure(sundial_routes.clone()))
    })
    .workers(2)
    .bind(&args.addr)
    .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = server.addrs().first().copied().context("the server bound no address")?;
    println!("listening on http://{addr} (Sundial at http://{addr}/sundial/#token={token})");

    // actix-web stops on SIGINT or SIGTERM, finishing the requests in flight.
    server.run().await?;
    let report = host.shutdown(Duration::from_secs(args.grace_secs)).await;
    pool.close().await;
    println!("stopped ({} executions were running, {} cancelled)", report.in_flight, report.cancelled.len());
    Ok(())
}
