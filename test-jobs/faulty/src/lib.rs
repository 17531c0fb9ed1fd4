//! Test fixture: a single-shot job that misbehaves on request. The operator
//! argument `mode` picks the behaviour: `ok` (default), `fatal`, `retryable`,
//! `skip`, `trap` (abort: wasm `unreachable`), `panic`, `loop` (never returns),
//! `memory` (allocates until it hits the limit), `print` (writes to stdout),
//! `flood` (writes `mib` MiB, default 1024, to stdout), `recurse` (unbounded
//! recursion), `big-return` (returns a message of `mib` MiB, default 200),
//! `sleep` (blocks in a host call for an hour), `probe` (tries the file system, the network and the environment, and
//! reports what it got), `state` (key-value state; the argument `op` picks the
//! call: `count` (default: adds one to the counter `key`, default "counter",
//! `times` times and reports it), `get`, `set` (`value`, or `bytes` bytes of
//! `x`), `delete`; every state error is a fatal error with the host's message),
//! `gauge` (counts itself in the application table `gauge (now, peak)` for
//! `ms` milliseconds, default 50: the peak is the most executions of this
//! mode that were ever inside their guest at once).

use sundial_guest::{Context, Job, JobError, JobInfo, Outcome, db, log, state};

struct Faulty;

impl Job for Faulty {
    fn info() -> JobInfo {
        JobInfo::new("faulty", "Misbehaves on request (test fixture)", "0 0 1 1 *")
    }

    fn run(ctx: &Context) -> Result<Outcome, JobError> {
        let mode = ctx.arg("mode").unwrap_or("ok");
        log::info(&format!("mode {mode}, attempt {}", ctx.attempt));
        match mode {
            "ok" => Ok(Outcome::changed(1).with_message("all good")),
            "fatal" => Err(JobError::fatal("the fixture failed on purpose")),
            "retryable" => Err(JobError::retryable("try again later")),
            "skip" => Err(JobError::skip("not enough reports")),
            "trap" => std::process::abort(),
            "panic" => panic!("fixture panicked on purpose"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            "print" => {
                println!("hello from stdout");
                eprintln!("hello from stderr");
                Ok(Outcome::unchanged())
            }
            "flood" => {
                use std::io::Write as _;
                let mib: usize = ctx.arg("mib").and_then(|m| m.parse().ok()).unwrap_or(1024);
                let chunk = vec![b'x'; 1 << 20];
                let mut out = std::io::stdout().lock();
                for _ in 0..mib {
                    out.write_all(&chunk).map_err(|e| JobError::fatal(format!("stdout: {e}")))?;
                }
                Ok(Outcome::unchanged().with_message(format!("wrote {mib} MiB")))
            }
            "recurse" => Ok(Outcome::changed(recurse(std::hint::black_box(1)))),
            "big-return" => {
                let mib: usize = ctx.arg("mib").and_then(|m| m.parse().ok()).unwrap_or(200);
                Ok(Outcome::unchanged().with_message("y".repeat(mib << 20)))
            }
            "sleep" => {
                // Blocks in a host call (wasi:io poll), not in guest code.
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Outcome::unchanged())
            }
            "probe" => Ok(Outcome::unchanged().with_message(probe())),
            "gauge" => {
                let ms: u64 = ctx.arg("ms").and_then(|v| v.parse().ok()).unwrap_or(50);
                db::execute("UPDATE gauge SET now = now + 1, peak = max(peak, now + 1)", &[])?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                db::execute("UPDATE gauge SET now = now - 1", &[])?;
                Ok(Outcome::unchanged())
            }
            "state" => state_op(ctx).map_err(|e| JobError::fatal(format!("state: {e}"))),
            other => Err(JobError::fatal(format!("unknown mode {other:?}"))),
        }
    }
}

/// The `state` mode.
fn state_op(ctx: &Context) -> Result<Outcome, String> {
    let key = ctx.arg("key").unwrap_or("counter");
    match ctx.arg("op").unwrap_or("count") {
        "count" => {
            let times: u32 = ctx.arg("times").and_then(|t| t.parse().ok()).unwrap_or(1);
            let mut n = 0u64;
            for _ in 0..times {
                n = match state::get(key)? {
                    Some(b) => String::from_utf8_lossy(&b).parse().map_err(|e| format!("not a counter: {e}"))?,
                    None => 0,
                } + 1;
                state::set(key, n.to_string().as_bytes())?;
            }
            Ok(Outcome::changed(1).with_message(format!("counter {n}")))
        }
        "get" => Ok(Outcome::unchanged().with_message(match state::get(key)? {
            Some(b) if b.len() > 64 => format!("{} bytes", b.len()),
            Some(b) => format!("value {:?}", String::from_utf8_lossy(&b)),
            None => "missing".to_string(),
        })),
        "set" => {
            let value = match ctx.arg("bytes").and_then(|b| b.parse::<usize>().ok()) {
                Some(n) => vec![b'x'; n],
                None => ctx.arg("value").unwrap_or("").as_bytes().to_vec(),
            };
            state::set(key, &value)?;
            Ok(Outcome::changed(1).with_message(format!("set {} bytes", value.len())))
        }
        "delete" => {
            state::delete(key)?;
            Ok(Outcome::changed(1).with_message("deleted"))
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

/// Never returns: each call needs a new stack frame.
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 16]);
    recurse(frame[0].wrapping_add(1)).wrapping_add(frame[15])
}

/// What the sandbox lets through, one `name: result` per line.
fn probe() -> String {
    let mut lines = Vec::new();
    for path in ["/etc/passwd", "../", ".", "/"] {
        let r = std::fs::read_dir(path)
            .map(|_| "listed".to_string())
            .or_else(|_| std::fs::read_to_string(path).map(|t| format!("read {} bytes", t.len())));
        lines.push(format!("fs {path}: {}", r.unwrap_or_else(|e| format!("error: {e}"))));
    }
    // Sockets through WASI directly (Debian's wasi-libc has none).
    let network = wasip2::sockets::instance_network::instance_network();
    let tcp = {
        use wasip2::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
        let postgres = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: 5432, address: (127, 0, 0, 1) });
        match wasip2::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
            Err(e) => format!("error: {e:?}"),
            Ok(socket) => match socket.start_connect(&network, postgres) {
                Err(e) => format!("error: {e:?}"),
                Ok(()) => {
                    socket.subscribe().block();
                    match socket.finish_connect() {
                        Ok(_) => "connected".to_string(),
                        Err(e) => format!("error: {e:?}"),
                    }
                }
            },
        }
    };
    lines.push(format!("tcp 127.0.0.1:5432: {tcp}"));
    // Name lookup through WASI directly (Debian's wasi-libc has no getaddrinfo).
    let dns = match wasip2::sockets::ip_name_lookup::resolve_addresses(&network, "localhost") {
        Ok(stream) => {
            stream.subscribe().block();
            match stream.resolve_next_address() {
                Ok(Some(_)) => "resolved".to_string(),
                Ok(None) => "no addresses".to_string(),
                Err(e) => format!("error: {e:?}"),
            }
        }
        Err(e) => format!("error: {e:?}"),
    };
    lines.push(format!("dns localhost: {dns}"));
    lines.push(format!("env: {} variables", std::env::vars().count()));
    lines.push(format!("args: {}", std::env::args().count()));
    lines.join("\n")
}

sundial_guest::export_job!(Faulty);
