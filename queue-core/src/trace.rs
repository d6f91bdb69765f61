//! Traces from dispatch to job: the context of the span current at dispatch travels in the
//! job's envelope, and the worker joins the job's `job` span to it, linked (the default of
//! OpenTelemetry's messaging conventions for a consumer) or as its child.
//!
//! The core pulls no OpenTelemetry crate: a [`TracePropagator`] does the work, installed
//! once per process with [`set_trace_propagator`]. The `queue-otel` crate has one over
//! `tracing-opentelemetry` and OpenTelemetry's global text-map propagator (W3C trace
//! context). Without one, nothing is carried and nothing costs more than a read of an empty
//! slot per dispatch.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Carries a trace context from a dispatch to the job's run.
pub trait TracePropagator: Send + Sync + 'static {
    /// The context of the span current now (at a dispatch), as text fields such as W3C's
    /// `traceparent`; empty when there is none.
    fn inject(&self) -> BTreeMap<String, String>;

    /// Joins `span`, the job's span as it starts, to the context `fields` carry (what
    /// [`inject`](Self::inject) gave at its dispatch).
    fn attach(&self, fields: &BTreeMap<String, String>, span: &tracing::Span);
}

static PROPAGATOR: RwLock<Option<Arc<dyn TracePropagator>>> = RwLock::new(None);

/// Installs `propagator` for this process (replacing any before it): every dispatch from
/// then on carries its context, and every job a worker of this process runs is joined to
/// the context it carries. Install it in the dispatching processes and in the workers.
pub fn set_trace_propagator(propagator: impl TracePropagator) {
    *PROPAGATOR.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(propagator));
}

fn current() -> Option<Arc<dyn TracePropagator>> {
    PROPAGATOR.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The fields to carry in a job dispatched now, if a propagator gives any.
pub(crate) fn inject() -> Option<BTreeMap<String, String>> {
    let fields = current()?.inject();
    (!fields.is_empty()).then_some(fields)
}

/// Joins `span` (the job's, before it is first entered: a parent can only be set then) to
/// the context the job whose payload is `payload` carries. The payload is read for that
/// one field, and only while a propagator is installed.
pub(crate) fn attach(payload: &[u8], span: &tracing::Span) {
    #[derive(serde::Deserialize)]
    struct Carried {
        #[serde(default)]
        trace: Option<BTreeMap<String, String>>,
    }
    let Some(propagator) = current() else {
        return;
    };
    if let Ok(Carried {
        trace: Some(fields),
    }) = serde_json::from_slice::<Carried>(payload)
    {
        propagator.attach(&fields, span);
    }
}
