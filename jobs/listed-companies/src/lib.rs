//! `listed-companies`: the list of listed companies, fetched over HTTP and
//! upserted into the application database (seed 004's listed-companies job).
//!
//! GETs the URL in the operator argument `url` (required; the operator grants
//! its host with `http = [...]`) and expects a JSON array of objects:
//!
//! ```json
//! [{"code": "7203", "name": "Toyota Motor", "market": "Prime"}, ...]
//! ```
//!
//! `code` (1-16 letters or digits) and `name` are required, `market` may be
//! missing or null, other fields are ignored. Every record is checked before
//! anything is written; then all of them are upserted into `listed_companies`
//! in one statement (per 5000 records): new codes are inserted, rows whose
//! name or market changed are updated with `updated_at`, unchanged rows are
//! left alone, and companies missing from the list are kept. The outcome
//! counts the rows inserted or changed.
//!
//! Failures: an HTTP 5xx answer, a refused connection or a timeout is
//! retryable; a 4xx answer, a malformed body or an invalid record is fatal
//! (naming the record) and writes nothing.

use std::collections::HashMap;

use serde_json::Value as Json;
use sundial_guest::{Context, Job, JobError, JobInfo, Outcome, Value, db, http, log, time};

struct ListedCompanies;

/// Records per statement: 3 parameters each stays far below every backend's
/// limit on bound parameters (SQLite 32766, Postgres 65535).
const RECORDS_PER_STATEMENT: usize = 5000;

impl Job for ListedCompanies {
    fn info() -> JobInfo {
        JobInfo::new("listed-companies", "Fetches the list of listed companies and upserts it", "0 6 * * *")
            .timezone("Asia/Tokyo")
            .read_write_database()
            // The URL, and so the host, is the operator's choice.
            .http("*")
    }

    fn run(ctx: &Context) -> Result<Outcome, JobError> {
        let url = ctx.arg("url").ok_or_else(|| {
            JobError::fatal(
                "the operator argument `url` is missing: set `args = { url = \"https://…\" }` under \
                 [jobs.listed-companies] in sundial.toml, or run with --arg url=…",
            )
        })?;
        let response = http::get(url).map_err(|e| with_context(url, e.into()))?;
        match response.status {
            200..=299 => {}
            status @ 500..=599 => {
                return Err(JobError::retryable(format!("{url} answered HTTP {status}; nothing was updated")));
            }
            status => return Err(JobError::fatal(format!("{url} answered HTTP {status}; nothing was updated"))),
        }
        let companies =
            parse(&response.body).map_err(|e| JobError::fatal(format!("{url}: {e}; nothing was updated")))?;
        log::info(&format!("fetched {} companies from {url} ({} bytes)", companies.len(), response.body.len()));
        if companies.is_empty() {
            log::warn("the list is empty; nothing to update");
            return Ok(Outcome::unchanged().with_message("the list is empty"));
        }

        let updated_at = iso_utc(time::now_ms())?;
        let mut changed = 0;
        for chunk in companies.chunks(RECORDS_PER_STATEMENT) {
            let (sql, params) = upsert(chunk, &updated_at);
            changed += db::execute(&sql, &params)?;
        }
        let message = format!("{changed} of {} companies inserted or changed", companies.len());
        log::info(&message);
        Ok(Outcome::changed(changed).with_message(message))
    }
}

/// One company of the list, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Company {
    code: String,
    name: String,
    market: Option<String>,
}

/// Parses and validates the whole list; the error names the first bad record
/// by position (1-based) and, when it has one, by code.
fn parse(body: &[u8]) -> Result<Vec<Company>, String> {
    let json: Json = serde_json::from_slice(body).map_err(|e| format!("the response is not valid JSON ({e})"))?;
    let Json::Array(records) = json else {
        return Err(format!("expected a JSON array of companies, got {}", kind(&json)));
    };
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    let mut companies = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let n = i + 1;
        let company = company(record).map_err(|e| format!("record {n}: {e}"))?;
        if let Some(first) = first_seen.insert(company.code.clone(), n) {
            return Err(format!("record {n}: code {:?} repeats record {first}", company.code));
        }
        companies.push(company);
    }
    Ok(companies)
}

fn company(record: &Json) -> Result<Company, String> {
    let Json::Object(fields) = record else {
        return Err(format!("expected an object, got {}", kind(record)));
    };
    let text = |field: &str| -> Result<Option<String>, String> {
        match fields.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Some(other) => Err(format!("{field:?} must be a string, got {}", kind(other))),
        }
    };
    let code = text("code")?.ok_or("\"code\" is missing")?;
    let valid = code.len() <= 16 && code.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid {
        return Err(format!("code {code:?} is not a security code (1-16 letters or digits)"));
    }
    let name = text("name")?.ok_or_else(|| format!("code {code:?}: \"name\" is missing or empty"))?;
    let market = text("market").map_err(|e| format!("code {code:?}: {e}"))?;
    Ok(Company { code, name, market })
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// One `INSERT … ON CONFLICT` for `companies`: `$1` is `updated_at`, then
/// three parameters per company. Unchanged rows are not touched, so the
/// statement's change count is the rows inserted or changed.
fn upsert(companies: &[Company], updated_at: &str) -> (String, Vec<Value>) {
    let mut params = Vec::with_capacity(1 + 3 * companies.len());
    params.push(Value::from(updated_at));
    let mut rows = Vec::with_capacity(companies.len());
    for (i, c) in companies.iter().enumerate() {
        let p = 2 + 3 * i;
        rows.push(format!("(${p}, ${}, ${}, $1)", p + 1, p + 2));
        params.extend([Value::from(c.code.as_str()), Value::from(c.name.as_str()), Value::from(c.market.clone())]);
    }
    let sql = format!(
        "INSERT INTO listed_companies (code, name, market, updated_at) VALUES {} \
         ON CONFLICT (code) DO UPDATE SET name = excluded.name, market = excluded.market, \
         updated_at = excluded.updated_at \
         WHERE listed_companies.name IS DISTINCT FROM excluded.name \
         OR listed_companies.market IS DISTINCT FROM excluded.market",
        rows.join(", ")
    );
    (sql, params)
}

/// Prefixes a fetch failure with the URL, keeping its class.
fn with_context(url: &str, e: JobError) -> JobError {
    match e {
        JobError::Retryable(m) => JobError::retryable(format!("cannot fetch {url}: {m}")),
        JobError::Fatal(m) => JobError::fatal(format!("cannot fetch {url}: {m}")),
        JobError::Skip(m) => JobError::skip(m),
    }
}

fn iso_utc(ms: i64) -> Result<String, JobError> {
    let t = time::to_local(ms, "UTC").map_err(JobError::fatal)?;
    Ok(format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second))
}

sundial_guest::export_job!(ListedCompanies);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_validated_with_their_position() {
        let ok = parse(
            br#"[{"code":"7203","name":"Toyota Motor","market":"Prime","extra":1},
                            {"code":"9984","name":" SoftBank Group ","market":null}]"#,
        )
        .unwrap();
        assert_eq!(ok[1], Company { code: "9984".into(), name: "SoftBank Group".into(), market: None });
        let err = |body: &str| parse(body.as_bytes()).unwrap_err();
        assert!(err("{\"info\":[]}").contains("expected a JSON array of companies, got an object"));
        assert!(err("[{\"code\":\"1\"").contains("not valid JSON"));
        assert_eq!(err(r#"[{"code":"1","name":"a"}, 7]"#), "record 2: expected an object, got a number");
        assert_eq!(err(r#"[{"name":"a"}]"#), "record 1: \"code\" is missing");
        assert_eq!(err(r#"[{"code":7203,"name":"a"}]"#), "record 1: \"code\" must be a string, got a number");
        assert!(err(r#"[{"code":"72 03","name":"a"}]"#).contains("is not a security code"));
        assert_eq!(err(r#"[{"code":"1","name":""}]"#), "record 1: code \"1\": \"name\" is missing or empty");
        assert_eq!(
            err(r#"[{"code":"1","name":"a"},{"code":"1","name":"b"}]"#),
            "record 2: code \"1\" repeats record 1"
        );
    }

    #[test]
    fn one_statement_binds_every_record() {
        let c = |code: &str| Company { code: code.into(), name: "n".into(), market: None };
        let (sql, params) = upsert(&[c("1"), c("2")], "2026-11-23T06:00:00Z");
        assert!(sql.contains("VALUES ($2, $3, $4, $1), ($5, $6, $7, $1) ON CONFLICT (code)"), "{sql}");
        assert_eq!(params.len(), 7);
    }
}
