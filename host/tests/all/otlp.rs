//! OpenTelemetry export: with the `otlp` feature, `--otlp-endpoint` sends a
//! run's execution span and its batch spans to a collector (here a plain
//! HTTP receiver on 127.0.0.1); without the feature the flag is refused with
//! a message saying how to get it.

use crate::helpers::*;

#[cfg(feature = "otlp")]
#[test]
fn a_run_exports_its_execution_and_batch_spans_over_otlp() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpListener;
    use std::sync::mpsc;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<(String, Vec<u8>)>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            let _ = tx.send((request_line, body));
        }
    });

    let env = Env::new(&["slow-items"]);
    crate::fixtures::users_and_visits(&env.path().join("sundial.db"), 25);
    std::fs::write(
        env.path().join("sundial.toml"),
        "database = \"sqlite://sundial.db\"\njobs_dir = \"jobs\"\n[jobs.slow-items]\ndatabase = \"read-write\"\n",
    )
    .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = sundial_in(env.path(), &["run", "slow-items", "--otlp-endpoint", &endpoint]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // The spans were flushed before the process exited. Protobuf keeps
    // strings as they are: span names, attribute keys and values.
    let wanted = ["execution", "batch", "slow-items", "trigger", "manual", "first_item", "service.name", "sundial"];
    let mut bodies = Vec::new();
    let has = |bodies: &[u8], s: &str| bodies.windows(s.len()).any(|w| w == s.as_bytes());
    while !wanted.iter().all(|w| has(&bodies, w)) {
        let Ok((line, body)) = rx.recv_timeout(std::time::Duration::from_secs(5)) else { break };
        assert!(line.starts_with("POST /v1/traces "), "{line}");
        bodies.extend(body);
    }
    for want in wanted {
        assert!(has(&bodies, want), "{want:?} not in the exported spans ({} bytes)", bodies.len());
    }
}

#[cfg(not(feature = "otlp"))]
#[test]
fn the_otlp_flag_says_how_to_get_it_when_it_is_not_built_in() {
    let env = Env::new(&["faulty"]);
    let out = sundial_in(env.path(), &["jobs", "--otlp-endpoint", "http://127.0.0.1:4318"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--features otlp"), "{stderr}");
}
