//! Logs, traces and metrics. Set up once, by the binary ([`init`]); library
//! code and tests never install a global subscriber.
//!
//! - Logs: human-readable by default, JSON with `--log-format json`;
//!   filtered by `RUST_LOG` (default `warn,slotgate=info`).
//! - Traces and metrics: exported over OTLP/gRPC when the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set,
//!   configured by the other standard `OTEL_*` variables (service name,
//!   resource attributes, sampler, batch and export intervals). Without an
//!   endpoint there is no exporter and no OpenTelemetry layer at all, so the
//!   hot path pays nothing for it.
//! - Every business call runs in an `rpc` span ([`TraceLayer`]) that joins
//!   the caller's W3C `traceparent` and carries the trace id, so every log
//!   line written while serving it names the trace.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::{
    KeyValue, global,
    propagation::Extractor,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator, trace::SdkTracerProvider,
};
use tonic::{
    body::Body,
    codegen::http::{HeaderMap, Request, Response},
};
use tower::{Layer, Service};
use tracing::{
    Instrument,
    field::{Empty, Field, Visit},
    span::Record,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    field::{RecordFields, VisitOutput},
    filter::{FilterExt, filter_fn},
    fmt::{
        self, FormatFields, FormattedFields,
        format::{DefaultVisitor, Writer},
    },
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::{
    config::LogFormat,
    metrics::Metrics,
    status::{REASON_FIELD, Refused},
};

/// The exporters to flush on the way out.
#[must_use = "shut telemetry down on exit, or the last spans are lost"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

/// Crates whose own spans would flood the exporter (the exporter's gRPC
/// client among them) and say nothing about slotgate's work.
const NOT_EXPORTED: [&str; 7] = ["h2", "hyper", "hyper_util", "tonic", "tower", "opentelemetry", "rustls"];

fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Fields of a call's `rpc` span that the text log leaves out: they are for
/// the trace exporter. The text log formats a span's fields when the span
/// opens and whenever one is recorded, for every call, whether or not a log
/// line ever shows them; and the status and reason are recorded as the call
/// ends, after its last log line. `otel.name` (the method) and `trace_id`
/// stay. No event carries these names.
const NOT_LOGGED: [&str; 5] = ["otel.kind", "rpc.system", "rpc.method", "rpc.grpc.status_code", REASON_FIELD];

/// The text log's field formatter: the default one, without [`NOT_LOGGED`].
struct LogFields;

impl<'w> FormatFields<'w> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut kept = Kept(DefaultVisitor::new(writer, true));
        fields.record(&mut kept);
        kept.0.finish()
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &Record<'_>) -> std::fmt::Result {
        let mut any = false;
        fields.record(&mut |field: &Field, _: &dyn std::fmt::Debug| any |= !NOT_LOGGED.contains(&field.name()));
        if !any {
            return Ok(());
        }
        if !current.fields.is_empty() {
            current.fields.push(' ');
        }
        self.format_fields(current.as_writer(), fields)
    }
}

/// The default visitor, passing only the fields the text log keeps.
struct Kept<'a>(DefaultVisitor<'a>);

impl Visit for Kept<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !NOT_LOGGED.contains(&field.name()) {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !NOT_LOGGED.contains(&field.name()) {
            self.0.record_error(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !NOT_LOGGED.contains(&field.name()) {
            self.0.record_debug(field, value);
        }
    }
}

/// Installs the global subscriber and, when configured, the OTLP exporters.
/// Must run inside the Tokio runtime (the exporter's client lives there).
pub fn init(format: LogFormat) -> Result<Telemetry, Box<dyn std::error::Error>> {
    // The levels (RUST_LOG) filter each layer rather than the whole
    // subscriber: a span no layer records (a call's inner spans, while no
    // exporter is configured) is then not created at all, rather than
    // created, entered and exited on every poll for no reader.
    let levels = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,slotgate=info"));
    let logs = match format {
        LogFormat::Text => fmt::layer().fmt_fields(LogFields).with_writer(std::io::stderr).boxed(),
        LogFormat::Json => fmt::layer().json().with_span_list(true).with_writer(std::io::stderr).boxed(),
    };
    // The log lines see a call's `rpc` span (it names the trace) and the
    // background passes' spans, not the spans inside a call (gate, pool
    // waits, transaction): those are for the trace exporter, and formatting
    // their fields for every call, for log lines that are rarely written,
    // took about 2.5% of the samples in a profile of the winners' path.
    let logs = logs.with_filter(levels().and(filter_fn(|meta| {
        meta.is_event()
            || meta.name() == "rpc"
            || !meta.target().starts_with("slotgate")
            || meta.name().starts_with("lifecycle")
    })));
    // The caller's trace context is honoured whether or not we export.
    global::set_text_map_propagator(TraceContextPropagator::new());
    if !otlp_configured() {
        tracing_subscriber::registry().with(logs).try_init()?;
        return Ok(Telemetry { tracer: None, meter: None });
    }

    let resource = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name("slotgate").build()
    };
    let spans = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    let tracer = SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
    let metrics = opentelemetry_otlp::MetricExporter::builder().with_tonic().build()?;
    let meter = SdkMeterProvider::builder().with_periodic_exporter(metrics).with_resource(resource).build();
    global::set_meter_provider(meter.clone());
    let otel = tracing_opentelemetry::layer().with_tracer(tracer.tracer("slotgate")).with_filter(
        levels().and(filter_fn(|meta| !NOT_EXPORTED.iter().any(|krate| meta.target().starts_with(krate)))),
    );
    tracing_subscriber::registry().with(logs).with(otel).try_init()?;
    Ok(Telemetry { tracer: Some(tracer), meter: Some(meter) })
}

impl Telemetry {
    /// Flushes what is buffered; on shutdown, before exit.
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
        if let Some(meter) = self.meter
            && let Err(e) = meter.shutdown()
        {
            eprintln!("flushing metrics failed: {e}");
        }
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace id of a W3C `traceparent` header, if well-formed.
fn traceparent_trace_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()) && trace_id != "0".repeat(32))
        .then(|| trace_id.to_owned())
}

/// Puts every business call in an `rpc` span that joins the caller's trace,
/// and records its duration and status.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    metrics: Arc<Metrics>,
    exporting: bool,
}

impl TraceLayer {
    /// Joins the caller's trace when spans are exported (an OTLP endpoint
    /// is configured, as [`init`] reads it); otherwise only the log's
    /// `trace_id` is taken from the caller's `traceparent`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics, exporting: otlp_configured() }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Traced { inner, metrics: Arc::clone(&self.metrics), exporting: self.exporting }
    }
}

#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    metrics: Arc<Metrics>,
    exporting: bool,
}

impl<S, B> Service<Request<B>> for Traced<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            error.reason = Empty,
            trace_id = Empty,
        );
        // With no exporter there is no trace to join: the caller's
        // context would be extracted and set for nothing, on every call.
        let exported = if self.exporting {
            let parent = global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
            let _ = span.set_parent(parent);
            span.context().span().span_context().trace_id()
        } else {
            opentelemetry::trace::TraceId::INVALID
        };
        if exported != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", exported.to_string());
        } else if let Some(caller) = traceparent_trace_id(request.headers()) {
            span.record("trace_id", caller);
        }

        let started = Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let result = future.await;
            // A refusal travels in the response head (trailers-only); a
            // success sends its OK status in the trailers.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
                    .unwrap_or(0),
                Err(_) => 2,
            };
            span.record("rpc.grpc.status_code", code);
            if let Some(Refused(why)) = result.as_ref().ok().and_then(|r| r.extensions().get::<Refused>()) {
                span.record(REASON_FIELD, *why);
            }
            metrics.rpc_duration.record(
                started.elapsed().as_secs_f64(),
                &[KeyValue::new("rpc.method", method), KeyValue::new("rpc.grpc.status_code", code)],
            );
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_yields_its_trace_id_and_a_malformed_one_nothing() {
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("traceparent", v.parse().unwrap());
            h
        };
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(traceparent_trace_id(&headers(&format!("00-{id}-00f067aa0ba902b7-01"))).as_deref(), Some(id));
        assert_eq!(traceparent_trace_id(&headers("00-xyz-00f067aa0ba902b7-01")), None);
        assert_eq!(traceparent_trace_id(&headers(&format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)))), None);
        assert_eq!(traceparent_trace_id(&HeaderMap::new()), None);
    }
}
