//! OpenTelemetry through the real gateway: a real OTLP/HTTP receiver in this
//! process decodes what the gateway exports (the protocol's own protobuf
//! types) and checks one `tools/call` trace — the request span under the
//! client's, every plugin as its child with its verdict, the upstream span,
//! and the trace carried on to the upstream in `_meta`.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use e2e::{Warden, quickstart_config};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::{Span, span::SpanKind},
};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Every span the receiver was sent, with its resource's attributes.
type Received = Arc<Mutex<Vec<(Vec<KeyValue>, Span)>>>;

/// An OTLP/HTTP receiver on 127.0.0.1:0: `POST /v1/traces` with an
/// `ExportTraceServiceRequest` in protobuf.
async fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let sink = Arc::clone(&sink);
                    async move {
                        assert_eq!(request.uri().path(), "/v1/traces");
                        let content_type = request.headers().get("content-type").cloned();
                        assert_eq!(content_type.unwrap(), "application/x-protobuf");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        for resource_spans in export.resource_spans {
                            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
                            for scope in resource_spans.scope_spans {
                                for span in scope.spans {
                                    sink.lock().unwrap().push((resource.clone(), span));
                                }
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (url, received)
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).and_then(|v: &AnyValue| v.value.as_ref())
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// A plugin span of on-call or on-result.
fn call_or_result(span: &Span) -> bool {
    span.name.starts_with("policy ") && (span.name.ends_with(" on-call") || span.name.ends_with(" on-result"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_tool_call_is_one_trace_under_the_clients_with_every_plugin_and_the_upstream() {
    let (endpoint, received) = receiver().await;
    let config = format!(
        "{}\n[telemetry]\nendpoint = \"{endpoint}\"\nexport_interval_ms = 200\nresource = {{ \"deployment.environment\" = \"test\" }}\n",
        quickstart_config()
    );
    let warden = Warden::start(&config);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{client_span}-01");
    let auth = "Bearer demo-acme-analyst";
    const PLANTED: &str = "hunter2-planted-secret";
    let arguments = json!({"query": "SELECT tenant, region FROM sales", "password": PLANTED});
    let query = json!({"name": "query_analytics_db", "arguments": arguments});
    let reply = warden.modern(&[("authorization", auth), ("traceparent", &traceparent)], 1, "tools/call", query).await;
    assert!(reply.json().get("result").is_some(), "{reply:?}");

    // Batches go out every 200 ms; wait for the whole trace.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<(Vec<KeyValue>, Span)> =
            received.lock().unwrap().iter().filter(|(_, s)| hex(&s.trace_id) == trace).cloned().collect();
        let upstream = spans.iter().any(|(_, s)| s.name.starts_with("tools/call") && s.kind == SpanKind::Client as i32);
        // The request span ends last (after the reply is written), so it
        // may come in a later batch than its children.
        let server = spans.iter().any(|(_, s)| s.kind == SpanKind::Server as i32);
        if server && upstream && spans.iter().filter(|(_, s)| call_or_result(s)).count() >= 4 {
            break spans;
        }
        assert!(Instant::now() < deadline, "the trace never arrived whole: {spans:#?}\n{}", warden.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let (resource, request) = spans
        .iter()
        .find(|(_, s)| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span: {spans:#?}"));
    assert_eq!(text(resource, "service.name"), Some("warden"));
    assert_eq!(text(resource, "deployment.environment"), Some("test"));
    assert_eq!(request.name, "tools/call query_analytics_db");
    assert_eq!(hex(&request.parent_span_id), client_span, "the request span is the client's span's child");
    assert_eq!(text(&request.attributes, "mcp.method.name"), Some("tools/call"));
    assert_eq!(text(&request.attributes, "gen_ai.tool.name"), Some("query_analytics_db"));
    assert_eq!(text(&request.attributes, "gen_ai.operation.name"), Some("execute_tool"));
    assert_eq!(text(&request.attributes, "warden.outcome"), Some("rewritten"), "{request:#?}");

    // Every plugin, on-call and on-result, as the request's child, with its
    // verdict and fuel. (Listing plugins run under routing, for the view.)
    let mut plugins: Vec<(String, String)> = spans
        .iter()
        .filter(|(_, s)| call_or_result(s))
        .map(|(_, s)| {
            assert_eq!(s.parent_span_id, request.span_id, "{} is not the request's child", s.name);
            assert!(
                matches!(attribute(&s.attributes, "warden.plugin.fuel"), Some(any_value::Value::IntValue(f)) if *f > 0),
                "{:?}",
                s.attributes
            );
            (s.name.clone(), text(&s.attributes, "warden.plugin.verdict").unwrap_or("-").to_owned())
        })
        .collect();
    plugins.sort();
    let expected: Vec<(String, String)> = [
        ("policy chain-detect on-call", "allow"),
        ("policy injection-sanitizer on-result", "allow"),
        ("policy rbac on-call", "allow"),
        ("policy tenant-filter on-result", "rewrite"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(plugins, expected);

    let (_, upstream) = spans.iter().find(|(_, s)| s.kind == SpanKind::Client as i32).unwrap();
    assert_eq!(upstream.parent_span_id, request.span_id);
    assert_eq!(text(&upstream.attributes, "warden.upstream"), Some("demo"));

    // Neither the credential (here the demo key, which is also the subject's
    // name, so: the Authorization value) nor a secret argument is in any span.
    let everything = format!("{spans:?}");
    assert!(!everything.contains(PLANTED) && !everything.contains("Bearer"), "a secret is in a span");

    // The upstream got the trace in `_meta`, under the upstream span.
    let record = std::fs::read_to_string(warden.dir.path().join("record.jsonl")).unwrap();
    let call: Value = record
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["method"] == "tools/call")
        .expect("the upstream saw the call");
    let carried = call["params"]["_meta"]["traceparent"].as_str().unwrap_or_default();
    assert_eq!(carried, format!("00-{trace}-{}-01", hex(&upstream.span_id)), "{call}");
}
