//! OpenTelemetry for `queue-core`: the trace context of the span that dispatches a job
//! travels in the job's envelope (as W3C trace-context fields, or whatever the process's
//! global text-map propagator writes), and the worker joins the job's `job` span to it:
//! linked to it by default, as OpenTelemetry's messaging conventions advise for a consumer,
//! or as its child.
//!
//! Install it in every process that dispatches and every worker, next to the application's
//! `tracing-opentelemetry` layer and its global propagator:
//!
//! ```no_run
//! use opentelemetry_sdk::propagation::TraceContextPropagator;
//!
//! opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
//! queue_otel::install(queue_otel::Join::Link);
//! ```
//!
//! The job's span is named `process QUEUE` with kind consumer (the worker's `otel.name` and
//! `otel.kind` fields) and carries `messaging.system`, `messaging.destination.name`,
//! `messaging.message.id`, `job.name`, `job.attempt` and `job.outcome`.

use std::collections::{BTreeMap, HashMap};

use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// How a job's span joins the span that dispatched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Join {
    /// A link to it: the job's run starts a trace of its own (OpenTelemetry's advice for
    /// messaging consumers: one dispatch may be run much later, or many times).
    #[default]
    Link,
    /// Its child: the run is part of the dispatching trace.
    ChildOf,
}

/// The [`TracePropagator`](queue_core::TracePropagator) over OpenTelemetry's global
/// text-map propagator and the `tracing-opentelemetry` layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtelPropagator {
    join: Join,
}

impl OtelPropagator {
    /// A propagator joining jobs' spans as `join` says.
    pub fn new(join: Join) -> Self {
        OtelPropagator { join }
    }
}

impl queue_core::TracePropagator for OtelPropagator {
    fn inject(&self) -> BTreeMap<String, String> {
        let cx = tracing::Span::current().context();
        if !cx.span().span_context().is_valid() {
            return BTreeMap::new();
        }
        let mut fields: HashMap<String, String> = HashMap::new();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut fields));
        fields.into_iter().collect()
    }

    fn attach(&self, fields: &BTreeMap<String, String>, span: &tracing::Span) {
        let fields: HashMap<String, String> =
            fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&fields));
        let remote = cx.span().span_context().clone();
        if !remote.is_valid() {
            return;
        }
        match self.join {
            Join::Link => span.add_link(remote),
            Join::ChildOf => {
                if let Err(e) = span.set_parent(cx) {
                    tracing::debug!(error = %e, "could not make the job's span a child of its dispatch");
                }
            }
        }
    }
}

/// Installs an [`OtelPropagator`] joining as `join` for this process.
pub fn install(join: Join) {
    queue_core::set_trace_propagator(OtelPropagator::new(join));
}
