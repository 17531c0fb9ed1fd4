//! Where the host's logs and spans go: lines on stderr (text or JSON), and,
//! with the `otlp` feature and an endpoint, OpenTelemetry traces over
//! OTLP/HTTP. Each execution is a span (job, execution id, trigger, attempt,
//! code digest) with a child span per item batch; guest log calls are events
//! inside them.
//!
//! The stderr filter is `RUST_LOG` or the command's default level; the
//! exported spans are filtered on their own (`info` and up, or
//! `SUNDIAL_OTLP_FILTER`), so `sundial run`'s quiet stderr does not empty the
//! traces.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How log lines on stderr are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// Telemetry that must be flushed before the process exits.
#[must_use = "call shutdown before exiting, or buffered spans are lost"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (waits for the exporter, bounded by
    /// its timeout).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: OpenTelemetry export did not finish: {e}");
        }
    }
}

/// Installs the global subscriber. `otlp` is the collector's base URL (e.g.
/// `http://127.0.0.1:4318`; `/v1/traces` is added).
pub fn init(format: LogFormat, default_level: &str, otlp: Option<&str>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    match otlp {
        None => {
            registry.init();
            Ok(Telemetry {
                #[cfg(feature = "otlp")]
                provider: None,
            })
        }
        #[cfg(feature = "otlp")]
        Some(endpoint) => {
            let (layer, provider) = otlp::layer(endpoint)?;
            registry.with(layer).init();
            Ok(Telemetry { provider: Some(provider) })
        }
        #[cfg(not(feature = "otlp"))]
        Some(_) => Err("this sundial was built without OpenTelemetry export; \
                        build it with `cargo build --release --features otlp` to use --otlp-endpoint"
            .into()),
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::{EnvFilter, Layer};

    /// The layer exporting spans to `endpoint`, and its provider (to flush).
    pub fn layer<S>(endpoint: &str) -> Result<(impl Layer<S>, SdkTracerProvider), String>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let base = endpoint.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("--otlp-endpoint: expected an http:// or https:// URL, got {endpoint:?}"));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{base}/v1/traces"))
            .build()
            .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
        let resource = Resource::builder().with_service_name("sundial").build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let filter = std::env::var("SUNDIAL_OTLP_FILTER")
            .ok()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new("info"));
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("sundial")).with_filter(filter);
        Ok((layer, provider))
    }
}
