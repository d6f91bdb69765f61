//! The worker runs each job in a `job` span named and filled after OpenTelemetry's messaging
//! conventions, and the lines a job's body logs are inside it (its body runs in a task of
//! its own). Read through a real `tracing-subscriber` formatter, on the in-memory store.

use std::io::Write;
use std::sync::{Arc, Mutex};

use queue_core::{JobError, Queue, WorkerOptions};

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_job_runs_in_its_span() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let queue = Queue::connect("memory://").await.unwrap();
    queue.listen("greet", |who: String, _ctx| async move {
        tracing::info!(%who, "inside the body");
        if who == "nobody" {
            return Err(JobError::fail("no one to greet"));
        }
        Ok(())
    });
    let id = queue
        .dispatch_named("greet", serde_json::json!("world"))
        .on_queue("mail")
        .await
        .unwrap();
    queue
        .dispatch_named("greet", serde_json::json!("nobody"))
        .on_queue("mail")
        .await
        .unwrap();
    let options = WorkerOptions::default()
        .queues(["mail"])
        .tries(1)
        .stop_when_empty();
    queue.worker(options).run().await.unwrap();

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let body = text
        .lines()
        .find(|line| line.contains("inside the body") && line.contains("who=world"))
        .unwrap_or_else(|| panic!("the body's line:\n{text}"));
    for field in [
        "job{",
        "otel.name=process mail",
        "otel.kind=\"consumer\"",
        "messaging.system=\"runall\"",
        "messaging.operation.type=\"process\"",
        "messaging.destination.name=mail",
        &format!("messaging.message.id={}", id.id()),
        "job.name=greet",
        "job.attempt=1",
    ] {
        assert!(body.contains(field), "{field} in {body}");
    }
    // The span's close says how each job ended.
    let closes: Vec<&str> = text.lines().filter(|l| l.contains("close")).collect();
    assert!(
        closes
            .iter()
            .any(|l| l.contains("job.outcome=\"succeeded\"")),
        "{text}"
    );
    assert!(
        closes.iter().any(|l| l.contains("job.outcome=\"failed\"")),
        "{text}"
    );
}
