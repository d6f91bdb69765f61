//! A job dispatched inside a span runs in a span linked to it (or, asked, its child), read
//! back from OpenTelemetry's in-memory exporter through a real `tracing-opentelemetry`
//! layer; a job dispatched outside any span carries nothing.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use queue_core::{Queue, StorageExt, WorkerOptions};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

async fn run_one(queue: &Queue, queue_name: &str) {
    let options = WorkerOptions::default()
        .queues([queue_name])
        .sleep(std::time::Duration::from_millis(20))
        .stop_when_empty();
    queue.worker(options).run().await.unwrap();
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_jobs_span_joins_its_dispatch() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let queue = Queue::connect("memory://").await.unwrap();
    queue.listen("greet", |_: serde_json::Value, _ctx| async { Ok(()) });

    // Linked (the default).
    queue_otel::install(queue_otel::Join::Link);
    let pushed = async {
        queue
            .dispatch_named("greet", serde_json::json!("linked"))
            .on_queue("mail")
            .await
    }
    .instrument(tracing::info_span!("request"))
    .await
    .unwrap();
    let stored = queue
        .storage()
        .track()
        .unwrap()
        .job(pushed.id())
        .await
        .unwrap()
        .unwrap();
    let envelope = queue_core::envelope::Envelope::decode(&stored.payload).unwrap();
    let fields = envelope.trace.expect("the dispatch's context is carried");
    assert!(fields.contains_key("traceparent"), "{fields:?}");
    run_one(&queue, "mail").await;
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let request = named(&spans, "request");
    let job = named(&spans, "process mail");
    assert_eq!((request.len(), job.len()), (1, 1), "{spans:#?}");
    let (request, job) = (request[0], job[0]);
    // The link's context is the request span's, read back from the envelope (so remote).
    let links: Vec<_> = job
        .links
        .links
        .iter()
        .map(|l| (l.span_context.trace_id(), l.span_context.span_id()))
        .collect();
    let request_id = (
        request.span_context.trace_id(),
        request.span_context.span_id(),
    );
    assert_eq!(links, vec![request_id], "{job:#?}");
    assert_ne!(job.span_context.trace_id(), request.span_context.trace_id());
    assert_eq!(job.span_kind, opentelemetry::trace::SpanKind::Consumer);
    let attribute = |key: &str| {
        job.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        attribute("messaging.destination.name").as_deref(),
        Some("mail")
    );
    assert_eq!(attribute("job.outcome").as_deref(), Some("succeeded"));
    exporter.reset();

    // As a child of the dispatch.
    queue_otel::install(queue_otel::Join::ChildOf);
    async {
        queue
            .dispatch_named("greet", serde_json::json!("child"))
            .on_queue("mail")
            .await
    }
    .instrument(tracing::info_span!("request"))
    .await
    .unwrap();
    run_one(&queue, "mail").await;
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let (request, job) = (
        named(&spans, "request")[0],
        named(&spans, "process mail")[0],
    );
    assert_eq!(job.span_context.trace_id(), request.span_context.trace_id());
    assert_eq!(job.parent_span_id, request.span_context.span_id());
    assert!(job.links.links.is_empty());
    exporter.reset();

    // Outside any span: nothing is carried, and the job's span stands alone.
    let pushed = queue
        .dispatch_named("greet", serde_json::json!("alone"))
        .on_queue("mail")
        .await
        .unwrap();
    let stored = queue
        .storage()
        .track()
        .unwrap()
        .job(pushed.id())
        .await
        .unwrap()
        .unwrap();
    let envelope = queue_core::envelope::Envelope::decode(&stored.payload).unwrap();
    assert_eq!(envelope.trace, None);
    run_one(&queue, "mail").await;
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let job = named(&spans, "process mail")[0];
    assert!(job.links.links.is_empty());
    assert_eq!(job.parent_span_id, opentelemetry::trace::SpanId::INVALID);
}
