//! One OTLP trace per task: the real binary exports to a real OTLP/HTTP
//! receiver on loopback (decoding with the official protobuf definitions), and
//! the span tree of one task is checked — names, parent links, attributes —
//! after SIGTERM, whose shutdown flushes the exporter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;
use serde_json::json;

use crate::process::ServerProcess;

/// An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1: every span it got,
/// with its resource's attributes.
/// A resource's attributes, values as strings.
type Resource = std::collections::BTreeMap<String, String>;

struct Receiver {
    addr: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<(Resource, Span)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<(Resource, Span)>>> = Arc::default();
        let sink = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            let body = req.into_body().collect().await?.to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            for rs in export.resource_spans {
                                let service: Resource = rs
                                    .resource
                                    .iter()
                                    .flat_map(|r| r.attributes.iter())
                                    .filter_map(|kv| {
                                        let v = match kv.value.as_ref()?.value.clone()? {
                                            AnyValue::StringValue(s) => s,
                                            other => format!("{other:?}"),
                                        };
                                        Some((kv.key.clone(), v))
                                    })
                                    .collect();
                                for ss in rs.scope_spans {
                                    for s in ss.spans {
                                        sink.lock().unwrap().push((service.clone(), s));
                                    }
                                }
                            }
                            let body = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, spans, task }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|v| match v {
            AnyValue::StringValue(s) => s,
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test]
async fn one_task_is_one_trace_from_the_callers_span_to_steps_agents_and_tools() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{}", receiver.addr);
    let server = ServerProcess::start_with_env(
        dir.path(),
        &[],
        &[
            ("FORGELINE_RATELIMIT__ENABLED", "false"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let api = server.api();
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = api
        .submit(json!({"queue": "agents"}))
        .header(
            "traceparent",
            &format!("00-{caller_trace}-{caller_span}-01"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let task = r.body;
    assert_eq!(task["trace_id"], caller_trace);

    let r = api.lease("agents", "w1", 1, 0).await;
    assert_eq!(r.status, StatusCode::OK);
    let leases = r.body;
    let lease = &leases["leases"][0];
    let lease_tp = lease["traceparent"].as_str().unwrap().to_string();
    assert!(
        lease_tp.starts_with(&format!("00-{caller_trace}-")),
        "{lease_tp}"
    );
    let run_span_id = lease_tp.split('-').nth(2).unwrap().to_string();
    let r = api
        .lease_events(
            lease,
            json!([
                {"type": "agent_started", "agent_name": "coder"},
                {"type": "tool_invoked", "agent_name": "coder", "tool_name": "read_file",
                 "tool_call_id": "call_1", "duration_ms": 3},
                {"type": "agent_finished", "agent_name": "coder", "duration_ms": 30},
                // An agent that never reports agent_finished.
                {"type": "agent_started", "agent_name": "critic"},
                {"type": "tool_invoked", "agent_name": "critic", "tool_name": "grep"},
                {"type": "verification_started", "step": "unit"},
                {"type": "verification_finished", "step": "unit", "outcome": "passed", "duration_ms": 12},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.text);
    let r = api.complete(lease, Some(json!({"ok": true}))).await;
    assert_eq!(r.status, StatusCode::OK);

    // Shutdown flushes what the batch processor still holds.
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");

    let spans = receiver.spans.lock().unwrap().clone();
    receiver.task.abort();
    // Every span names the service, its version and this process.
    let instances: std::collections::BTreeSet<&str> = spans
        .iter()
        .map(|(r, _)| {
            assert_eq!(
                r.get("service.name").map(String::as_str),
                Some("forgeline"),
                "{r:?}"
            );
            assert_eq!(
                r.get("service.version").map(String::as_str),
                Some(env!("CARGO_PKG_VERSION")),
                "{r:?}"
            );
            r.get("service.instance.id")
                .map(String::as_str)
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        instances.len(),
        1,
        "one instance id per process: {instances:?}"
    );
    assert!(
        !instances.iter().next().unwrap().is_empty(),
        "service.instance.id"
    );
    let ours: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == caller_trace)
        .collect();
    let by_name: HashMap<&str, &Span> = ours.iter().map(|s| (s.name.as_str(), *s)).collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    let get = |n: &str| {
        *by_name
            .get(n)
            .unwrap_or_else(|| panic!("no span {n:?} in {names:?}"))
    };

    let submit = get("POST /api/v1/tasks");
    assert_eq!(
        hex(&submit.parent_span_id),
        caller_span,
        "caller's span parents the submit"
    );
    assert_eq!(submit.kind, 2, "SERVER");
    assert_eq!(attr(submit, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(attr(submit, "http.route").as_deref(), Some("/api/v1/tasks"));
    assert_eq!(
        attr(submit, "http.response.status_code").as_deref(),
        Some("201")
    );
    let submit_id = hex(&submit.span_id);

    let wait = get("queue_wait agents");
    assert_eq!(hex(&wait.parent_span_id), submit_id);
    let run = get("run agents");
    assert_eq!(hex(&run.parent_span_id), submit_id);
    assert_eq!(
        hex(&run.span_id),
        run_span_id,
        "the lease's traceparent is the run span"
    );
    assert_eq!(
        attr(run, "forgeline.run.outcome").as_deref(),
        Some("completed")
    );
    assert_eq!(
        attr(run, "forgeline.task.id").as_deref(),
        task["id"].as_str()
    );
    let step = get("step unit");
    assert_eq!(hex(&step.parent_span_id), run_span_id);
    assert_eq!(
        attr(step, "forgeline.step.outcome").as_deref(),
        Some("passed")
    );
    assert_eq!(
        step.end_time_unix_nano - step.start_time_unix_nano,
        12_000_000
    );
    let agent = get("invoke_agent coder");
    assert_eq!(hex(&agent.parent_span_id), run_span_id);
    assert_eq!(
        attr(agent, "gen_ai.operation.name").as_deref(),
        Some("invoke_agent")
    );
    assert_eq!(attr(agent, "gen_ai.agent.name").as_deref(), Some("coder"));
    let tool = get("execute_tool read_file");
    assert_eq!(
        hex(&tool.parent_span_id),
        hex(&agent.span_id),
        "tools nest under their agent"
    );
    assert_eq!(
        attr(tool, "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert_eq!(attr(tool, "gen_ai.tool.name").as_deref(), Some("read_file"));
    assert_eq!(attr(tool, "gen_ai.tool.call.id").as_deref(), Some("call_1"));
    assert_eq!(attr(agent, "forgeline.agent.unfinished"), None);
    // The unfinished agent ends with its run, and its tool nests under it.
    let critic = get("invoke_agent critic");
    assert_eq!(hex(&critic.parent_span_id), run_span_id);
    assert_eq!(
        attr(critic, "forgeline.agent.unfinished").as_deref(),
        Some("true")
    );
    assert_eq!(critic.end_time_unix_nano, run.end_time_unix_nano);
    assert_eq!(
        hex(&get("execute_tool grep").parent_span_id),
        hex(&critic.span_id)
    );
    // The worker sent no traceparent, so its own requests are traces of
    // their own; the task's trace holds the run it worked on.
    let lease_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "POST /api/v1/queues/{queue}/lease")
        .expect("the lease request has a server span");
    assert_ne!(hex(&lease_span.trace_id), caller_trace);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_transition_is_a_log_line_with_the_tasks_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let c = server.api();
    let labels = json!({"correlation_id": "c-9", "project": "web", "execution_id": "e-1"});
    let t = c
        .submit(json!({"queue": "logq", "labels": labels}))
        .await
        .expect(StatusCode::CREATED);
    let id = t["id"].as_str().unwrap().to_string();
    let l = c.lease("logq", "w-log", 1, 0).await.expect(StatusCode::OK);
    let l = &l["leases"][0];
    c.complete(l, None).await.expect(StatusCode::OK);
    let logs = server.log_text();
    assert!(server.terminate().success());

    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "task transition" && l["task_id"] == id.as_str())
        .collect();
    let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["queued", "running", "completed"], "{logs}");
    for line in &lines {
        assert_eq!(line["target"], "forgeline::task");
        assert_eq!(line["queue"], "logq");
        assert_eq!(line["correlation_id"], "c-9");
        assert_eq!(line["project_id"], "web");
        assert_eq!(line["execution_id"], "e-1");
        assert_eq!(line["trace_id"].as_str().map(str::len), Some(32), "{line}");
    }
    assert_eq!(lines[1]["event"], "task_leased");
    assert_eq!(lines[1]["run_id"], l["run_id"]);
    assert_eq!(lines[2]["run_id"], l["run_id"]);
}
