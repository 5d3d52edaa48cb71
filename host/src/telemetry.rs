//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when
//! `[telemetry]` is configured; off, and free, otherwise (no layer is
//! installed, so spans stay plain `tracing` spans).
//!
//! Every request the gateway handles is a server span named
//! `<mcp.method.name> <target>` (the OpenTelemetry semantic conventions for
//! MCP), with child spans for routing, each plugin invocation (plugin, hook,
//! verdict, fuel) and the upstream call. A client's W3C `traceparent` and
//! `tracestate` — HTTP headers, or `_meta` where the client puts them —
//! make the request span a child of the client's; the upstream call carries
//! its own context on, as headers to HTTP upstreams and in `_meta` to every
//! upstream.

use std::{collections::HashMap, time::Duration};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// `[telemetry]`: where and what to export.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP endpoint's base URL (`http://127.0.0.1:4318`); spans go
    /// to `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// Share of new traces recorded (0–1); a client's sampling decision is
    /// followed.
    pub sampling_ratio: f64,
    /// `service.name`.
    pub service_name: String,
    /// More resource attributes (`deployment.environment`, …).
    pub resource: Vec<(String, String)>,
    /// Most time between exports.
    pub export_interval: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4318".into(),
            sampling_ratio: 1.0,
            service_name: "warden".into(),
            resource: Vec::new(),
            export_interval: Duration::from_secs(5),
        }
    }
}

/// A running exporter; flush it with [`Telemetry::shutdown`] at exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// The `tracing` layer that turns spans into OpenTelemetry spans.
pub type Layer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

impl Telemetry {
    /// Start exporting as `settings` say; the layer goes into the subscriber.
    pub fn start<S>(settings: &TelemetrySettings) -> Result<(Self, Layer<S>), String>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let endpoint = format!("{}/v1/traces", settings.endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default().with_scheduled_delay(settings.export_interval).build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let attributes: Vec<KeyValue> =
            settings.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
            .with_attributes(attributes)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling_ratio))))
            .with_resource(resource)
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("warden"));
        Ok((Self { provider }, layer))
    }

    /// Export what is left and stop.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(%error, "could not export the last spans");
        }
    }
}

struct Carrier<'a>(&'a mut HashMap<String, String>);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Make `span` a child of the client's trace, if it sent one. Without the
/// OpenTelemetry layer this does nothing.
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let mut fields = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    if let Some(state) = tracestate {
        fields.insert("tracestate".into(), state.to_owned());
    }
    let parent = TraceContextPropagator::new().extract(&Carrier(&mut fields));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// `traceparent` (and `tracestate`) of `span`, to carry to an upstream;
/// empty without the OpenTelemetry layer.
pub fn propagation(span: &tracing::Span) -> Vec<(String, String)> {
    let context: Context = span.context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut Carrier(&mut fields));
    let mut fields: Vec<(String, String)> = fields.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    fields.sort();
    fields
}
