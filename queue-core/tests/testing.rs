//! The test doubles an application uses in its own tests: the fake's assertions (each
//! passing and failing, with the message it fails with), the inline queue, and
//! `fake_except`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::{
    Batch, Chain, Error, Handle, Job, JobContext, JobError, Queue, StorageExt, Workflow,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Job)]
#[job(name = "send-email", queue = "mail")]
struct SendEmail {
    to: String,
}

impl Handle for SendEmail {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Job)]
struct ImportRow {
    row: u32,
}

impl Handle for ImportRow {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn email(to: &str) -> SendEmail {
    SendEmail { to: to.into() }
}

/// The message `f` panics with (it must panic).
fn panic_message(f: impl FnOnce()) -> String {
    let payload = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("expected the assertion to fail, and it passed"),
        Err(payload) => payload,
    };
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        panic!("a non-text panic")
    }
}

#[tokio::test]
async fn assert_dispatched_passes_and_fails() {
    let queue = Queue::fake();
    let message = panic_message(|| queue.assert_dispatched::<SendEmail>());
    assert_eq!(
        message,
        "expected `send-email` (SendEmail) to be dispatched, but it was not; dispatched: nothing"
    );
    ImportRow { row: 1 }.dispatch().await.unwrap();
    ImportRow { row: 2 }
        .dispatch()
        .on_queue("low")
        .await
        .unwrap();
    let message = panic_message(|| queue.assert_dispatched::<SendEmail>());
    assert_eq!(
        message,
        "expected `send-email` (SendEmail) to be dispatched, but it was not; dispatched: 2 \
         jobs: `import-row` on `default`, `import-row` on `low`"
    );
    email("a@b.c").dispatch().await.unwrap();
    queue.assert_dispatched::<SendEmail>();
    queue.assert_dispatched::<ImportRow>();
}

#[tokio::test]
#[should_panic(expected = "expected `import-row` (ImportRow) to be dispatched, but it was not")]
async fn assert_dispatched_fails_with_should_panic() {
    let queue = Queue::fake();
    email("a@b.c").dispatch().await.unwrap();
    queue.assert_dispatched::<ImportRow>();
}

#[tokio::test]
async fn assert_dispatched_with_a_predicate() {
    let queue = Queue::fake();
    let message = panic_message(|| queue.assert_dispatched_with(|e: &SendEmail| e.to == "x"));
    assert!(
        message.contains("but none of type SendEmail was; dispatched: nothing"),
        "{message}"
    );
    email("a@b.c").dispatch().await.unwrap();
    email("d@e.f").dispatch().await.unwrap();
    queue.assert_dispatched_with(|e: &SendEmail| e.to == "d@e.f");
    let message = panic_message(|| queue.assert_dispatched_with(|e: &SendEmail| e.to == "x"));
    assert_eq!(
        message,
        r#"expected `send-email` (SendEmail) matching the predicate to be dispatched, but none of the 2 dispatched matched: {"to":"a@b.c"}, {"to":"d@e.f"}"#
    );
}

#[tokio::test]
async fn assert_dispatched_on_a_queue() {
    let queue = Queue::fake();
    email("a@b.c").dispatch().await.unwrap();
    email("a@b.c").dispatch().await.unwrap();
    email("a@b.c").dispatch().on_queue("high").await.unwrap();
    queue.assert_dispatched_on::<SendEmail>("mail");
    queue.assert_dispatched_on::<SendEmail>("high");
    let message = panic_message(|| queue.assert_dispatched_on::<SendEmail>("low"));
    assert_eq!(
        message,
        "expected `send-email` (SendEmail) to be dispatched on queue `low`, but it was \
         dispatched on `mail` ×2, `high`"
    );
    let message = panic_message(|| queue.assert_dispatched_on::<ImportRow>("low"));
    assert!(message.contains("but it was not dispatched; dispatched: 3 jobs: `send-email` on `mail` ×2, `send-email` on `high`"), "{message}");
}

#[tokio::test]
async fn assert_dispatched_a_number_of_times() {
    let queue = Queue::fake();
    queue.assert_dispatched_times::<SendEmail>(0);
    email("a@b.c").dispatch().await.unwrap();
    email("a@b.c").dispatch().await.unwrap();
    queue.assert_dispatched_times::<SendEmail>(2);
    let message = panic_message(|| queue.assert_dispatched_times::<SendEmail>(3));
    assert_eq!(
        message,
        "expected `send-email` (SendEmail) to be dispatched 3 times, but it was dispatched 2 \
         times; dispatched: 2 jobs: `send-email` on `mail` ×2"
    );
    let message = panic_message(|| queue.assert_dispatched_times::<ImportRow>(1));
    assert!(
        message.contains("to be dispatched 1 time, but it was dispatched 0 times"),
        "{message}"
    );
}

#[tokio::test]
async fn assert_not_dispatched_and_nothing_dispatched() {
    let queue = Queue::fake();
    queue.assert_not_dispatched::<SendEmail>();
    queue.assert_nothing_dispatched();
    queue.assert_nothing_batched();
    email("a@b.c").dispatch().await.unwrap();
    queue.assert_not_dispatched::<ImportRow>();
    queue.assert_not_dispatched_with(|e: &SendEmail| e.to == "other");
    let message = panic_message(|| queue.assert_not_dispatched::<SendEmail>());
    assert_eq!(
        message,
        "expected `send-email` (SendEmail) not to be dispatched, but it was dispatched 1 time: \
         1 job: `send-email` on `mail`"
    );
    let message =
        panic_message(|| queue.assert_not_dispatched_with(|e: &SendEmail| e.to == "a@b.c"));
    assert!(
        message.contains(r#"but `send-email` on `mail` was, with payload {"to":"a@b.c"}"#),
        "{message}"
    );
    let message = panic_message(|| queue.assert_nothing_dispatched());
    assert_eq!(
        message,
        "expected nothing to be dispatched, but 1 job: `send-email` on `mail` was dispatched"
    );
}

#[tokio::test]
async fn the_dispatched_view_has_queues_delays_and_payloads() {
    let queue = Queue::fake();
    email("a@b.c")
        .dispatch()
        .delay(Duration::from_secs(90))
        .without_overlapping()
        .await
        .unwrap();
    queue
        .dispatch_named("ping", serde_json::json!({"n": 1}))
        .tries(2)
        .unique_key("n:1")
        .await
        .unwrap();
    let jobs = queue.dispatched_jobs();
    assert_eq!(jobs.len(), 2);
    assert!(jobs[0].is::<SendEmail>());
    assert_eq!(jobs[0].decode::<SendEmail>(), Some(email("a@b.c")));
    assert_eq!(jobs[0].decode::<ImportRow>(), None);
    assert_eq!(jobs[0].delay(), Some(Duration::from_secs(90)));
    assert_eq!(jobs[0].lock.as_deref(), Some("send-email"));
    assert_eq!(
        jobs[0].to_string(),
        "`send-email` on `mail` (delayed 1m 30s)"
    );
    assert_eq!((jobs[1].name.as_str(), jobs[1].tries), ("ping", Some(2)));
    assert_eq!(jobs[1].payload, serde_json::json!({"n": 1}));
    assert_eq!(jobs[1].delay(), None);
    assert_eq!(jobs[1].unique_key.as_deref(), Some("n:1"));
    assert_eq!(jobs[0].unique_key, None);
    assert_eq!(queue.dispatched::<SendEmail>(), vec![email("a@b.c")]);
    assert_eq!(
        queue.dispatched_named("ping"),
        vec![serde_json::json!({"n": 1})]
    );
}

#[tokio::test]
async fn assert_chained_with_names_in_order() {
    let queue = Queue::fake();
    let message = panic_message(|| queue.assert_chained(["a"]));
    assert_eq!(
        message,
        "expected a chain [a] to be dispatched, but no chain was"
    );
    Chain::new()
        .then(ImportRow { row: 1 })
        .then(email("a@b.c"))
        .then(queue.dispatch_named("report", serde_json::json!({})))
        .finally(queue.dispatch_named("clean-up", serde_json::json!({})))
        .dispatch()
        .await
        .unwrap();
    queue.assert_chained([ImportRow::NAME, SendEmail::NAME, "report"]);
    let message = panic_message(|| queue.assert_chained([SendEmail::NAME, ImportRow::NAME]));
    assert_eq!(
        message,
        "expected a chain [send-email, import-row] to be dispatched, but the chains dispatched \
         were: [import-row, send-email, report] finally `clean-up`"
    );
    let chain = &queue.chains()[0];
    assert_eq!(chain.links[1].decode::<SendEmail>(), Some(email("a@b.c")));
    assert_eq!(chain.links[1].queue, "mail");
    assert!(chain.catch.is_none());
    assert_eq!(
        chain.finally.as_ref().map(|j| j.name.as_str()),
        Some("clean-up")
    );
    // Only the first link went to a queue.
    queue.assert_dispatched_times::<ImportRow>(1);
    queue.assert_not_dispatched::<SendEmail>();
    let message = panic_message(|| queue.assert_nothing_dispatched());
    assert!(
        message.contains("and chains [import-row, send-email, report] finally `clean-up`"),
        "{message}"
    );
}

#[tokio::test]
async fn assert_batched_with_a_predicate() {
    let queue = Queue::fake();
    let message = panic_message(|| queue.assert_batched(|b| b.len() == 3));
    assert_eq!(
        message,
        "expected a batch matching the predicate to be dispatched, but no batch was"
    );
    Batch::new()
        .add_many((1..=3).map(|row| ImportRow { row }))
        .add(email("a@b.c"))
        .then(queue.dispatch_named("import-done", serde_json::json!({})))
        .catch(queue.dispatch_named("import-failed", serde_json::json!({})))
        .allow_failures()
        .dispatch()
        .await
        .unwrap();
    queue.assert_batched(|b| {
        b.len() == 4
            && b.count::<ImportRow>() == 3
            && b.count::<SendEmail>() == 1
            && b.jobs::<ImportRow>().iter().map(|r| r.row).sum::<u32>() == 6
            && b.then.as_ref().is_some_and(|j| j.name == "import-done")
            && b.allow_failures
    });
    let message = panic_message(|| queue.assert_batched(|b| b.count::<ImportRow>() == 2));
    assert_eq!(
        message,
        "expected a batch matching the predicate to be dispatched, but none of the 1 \
         dispatched matched: 4 members (`import-row` ×3, `send-email`) then `import-done` \
         catch `import-failed` allowing failures"
    );
    let message = panic_message(|| queue.assert_nothing_batched());
    assert!(message.starts_with("expected no batch to be dispatched, but 1 was: 4 members"));
    // Members went to their queues.
    queue.assert_dispatched_times::<ImportRow>(3);
}

#[tokio::test]
async fn an_open_batch_is_recorded_as_it_grows() {
    let queue = Queue::fake();
    let mut open = Batch::new()
        .add(ImportRow { row: 1 })
        .finally(queue.dispatch_named("done", serde_json::json!({})))
        .open()
        .await
        .unwrap();
    open.add_many((2..=5).map(|row| ImportRow { row }))
        .await
        .unwrap();
    let id = open.seal().await.unwrap();
    let batches = queue.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].id, id);
    assert_eq!(batches[0].count::<ImportRow>(), 5);
    assert!(batches[0].then.is_none());
    assert_eq!(
        batches[0].finally.as_ref().map(|j| j.name.as_str()),
        Some("done")
    );
}

#[tokio::test]
async fn assert_chained_with_checks_catch_and_finally() {
    let queue = Queue::fake();
    let message = panic_message(|| queue.assert_chained_with(|c| c.catch.is_some()));
    assert_eq!(
        message,
        "expected a chain matching the predicate to be dispatched, but no chain was"
    );
    Chain::new()
        .then(ImportRow { row: 1 })
        .then(queue.dispatch_named("report", serde_json::json!({})))
        .catch(email("ops@b.c"))
        .finally(queue.dispatch_named("clean-up", serde_json::json!({"dir": "/tmp"})))
        .dispatch()
        .await
        .unwrap();
    queue.assert_chained_with(|c| {
        c.names() == [ImportRow::NAME, "report"]
            && c.catch_is::<SendEmail>()
            && c.catch
                .as_ref()
                .and_then(|j| j.decode::<SendEmail>())
                .is_some_and(|e| e.to == "ops@b.c")
            && c.finally
                .as_ref()
                .is_some_and(|j| j.name == "clean-up" && j.payload["dir"] == "/tmp")
    });
    let chain = &queue.chains()[0];
    assert!(chain.catch_is::<SendEmail>() && !chain.catch_is::<ImportRow>());
    assert!(!chain.finally_is::<SendEmail>());
    let message = panic_message(|| queue.assert_chained_with(|c| c.finally_is::<SendEmail>()));
    assert_eq!(
        message,
        "expected a chain matching the predicate to be dispatched, but none of the 1 \
         dispatched matched: [import-row, report] catch `send-email` finally `clean-up`"
    );
}

#[tokio::test]
#[should_panic(
    expected = "expected a chain matching the predicate to be dispatched, but none of the 1 \
                dispatched matched: [import-row] finally `clean-up`"
)]
async fn assert_chained_with_fails_listing_the_chains_and_their_callbacks() {
    let queue = Queue::fake();
    Chain::new()
        .then(ImportRow { row: 1 })
        .finally(queue.dispatch_named("clean-up", serde_json::json!({})))
        .dispatch()
        .await
        .unwrap();
    queue.assert_chained_with(|c| c.catch_is::<SendEmail>());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Job)]
struct ImportDone {
    file: String,
}

impl Handle for ImportDone {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test]
async fn assert_batched_checks_then_catch_and_finally() {
    let queue = Queue::fake();
    Batch::new()
        .add_many((1..=2).map(|row| ImportRow { row }))
        .then(ImportDone {
            file: "a.csv".into(),
        })
        .finally(email("ops@b.c"))
        .dispatch()
        .await
        .unwrap();
    queue.assert_batched(|b| {
        b.then_is::<ImportDone>()
            && b.then
                .as_ref()
                .and_then(|j| j.decode::<ImportDone>())
                .is_some_and(|done| done.file == "a.csv")
            && b.catch.is_none()
            && !b.catch_is::<ImportDone>()
            && b.finally_is::<SendEmail>()
    });
    let message = panic_message(|| queue.assert_batched(|b| b.catch_is::<SendEmail>()));
    assert_eq!(
        message,
        "expected a batch matching the predicate to be dispatched, but none of the 1 \
         dispatched matched: 2 members (`import-row` ×2) then `import-done` finally `send-email`"
    );
}

#[tokio::test]
#[should_panic(
    expected = "expected a batch matching the predicate to be dispatched, but none of the 1 \
                dispatched matched: 1 members (`import-row`) then `import-done`"
)]
async fn assert_batched_fails_listing_the_batches_and_their_callbacks() {
    let queue = Queue::fake();
    Batch::new()
        .add(ImportRow { row: 1 })
        .then(ImportDone {
            file: "a.csv".into(),
        })
        .dispatch()
        .await
        .unwrap();
    queue.assert_batched(|b| b.then_is::<SendEmail>());
}

/// The workflow of the README's example, with a node that has edges of every kind.
async fn dispatch_order_workflow(queue: &Queue) -> queue_core::WorkflowId {
    let named =
        |name: &str, cents: u32| queue.dispatch_named(name, serde_json::json!({ "cents": cents }));
    let wf = Workflow::new();
    let reserve = wf.add("reserve", ImportRow { row: 1 });
    let charge = wf
        .add("charge", named("charge-card", 500).on_queue("money"))
        .after(&reserve);
    let mail = wf.add("email", email("a@b.c")).after(&reserve);
    wf.add("ship", named("ship", 0)).after_all([&charge, &mail]);
    wf.add("refund", named("refund", 500))
        .on_failure_of(&charge);
    wf.add("audit", named("audit", 0))
        .after(&reserve)
        .on_failure_of(&charge)
        .on_complete_of(&mail);
    wf.dispatch().await.unwrap()
}

const ORDER_WORKFLOW: &str = "{reserve: `import-row`, charge: `charge-card` after reserve, \
     email: `send-email` after reserve, ship: `ship` after charge+email, refund: `refund` \
     on_failure_of charge, audit: `audit` after reserve on_failure_of charge on_complete_of \
     email}";

#[tokio::test]
async fn a_fake_records_a_workflow_with_its_nodes_and_edges() {
    let queue = Queue::fake();
    let id = dispatch_order_workflow(&queue).await;
    let workflows = queue.workflows();
    assert_eq!(workflows.len(), 1);
    let wf = &workflows[0];
    assert_eq!(wf.id, id);
    assert_eq!(
        wf.names(),
        ["reserve", "charge", "email", "ship", "refund", "audit"]
    );
    assert_eq!(
        (wf.len(), wf.count::<ImportRow>(), wf.count::<SendEmail>()),
        (6, 1, 1)
    );
    assert_eq!(wf.to_string(), ORDER_WORKFLOW);

    let reserve = wf.node("reserve").unwrap();
    assert!(reserve.is_root() && reserve.is::<ImportRow>());
    assert_eq!(
        reserve.job.decode::<ImportRow>(),
        Some(ImportRow { row: 1 })
    );
    let charge = wf.node("charge").unwrap();
    assert_eq!(
        (charge.job.name.as_str(), charge.job.queue.as_str()),
        ("charge-card", "money")
    );
    assert_eq!(charge.job.payload, serde_json::json!({"cents": 500}));
    assert_eq!(charge.after, ["reserve"]);
    assert!(charge.on_failure_of.is_empty() && charge.on_complete_of.is_empty());
    let email_node = wf.node("email").unwrap();
    assert_eq!(email_node.job.queue, "mail", "the job type's queue");
    assert_eq!(email_node.job.decode::<SendEmail>(), Some(email("a@b.c")));
    assert_eq!(wf.node("ship").unwrap().after, ["charge", "email"]);
    assert_eq!(wf.node("refund").unwrap().on_failure_of, ["charge"]);
    let audit = wf.node("audit").unwrap();
    assert_eq!(
        (
            &audit.after[..],
            &audit.on_failure_of[..],
            &audit.on_complete_of[..]
        ),
        (
            &["reserve".to_owned()][..],
            &["charge".to_owned()][..],
            &["email".to_owned()][..]
        )
    );
    assert!(audit.waits_for("email") && !audit.waits_for("ship") && !audit.is_root());
    assert!(wf.node("nope").is_none());

    assert!(wf.has_edge("reserve", "charge"));
    assert!(wf.has_edge("charge", "refund"));
    assert!(wf.has_edge("email", "audit"));
    assert!(!wf.has_edge("charge", "reserve"), "edges have a direction");
    assert!(!wf.has_edge("email", "refund"));
    assert!(!wf.has_edge("reserve", "nope"));

    // Only the node with no edge into it went to a queue.
    queue.assert_dispatched_times::<ImportRow>(1);
    queue.assert_not_dispatched::<SendEmail>();
    assert!(queue.dispatched_named("charge-card").is_empty());
    assert!(queue.chains().is_empty() && queue.batches().is_empty());
}

#[tokio::test]
async fn assert_workflow_dispatched_passes_and_fails() {
    let queue = Queue::fake();
    queue.assert_no_workflow_dispatched();
    let message = panic_message(|| queue.assert_workflow_dispatched(|_| true));
    assert_eq!(
        message,
        "expected a workflow matching the predicate to be dispatched, but no workflow was; \
         dispatched: nothing"
    );
    dispatch_order_workflow(&queue).await;
    queue.assert_workflow_dispatched(|wf| {
        wf.node("charge")
            .is_some_and(|n| n.job.name == "charge-card" && n.after == ["reserve"])
            && wf
                .node("refund")
                .is_some_and(|n| n.on_failure_of == ["charge"])
            && wf.has_edge("email", "ship")
    });
    let message =
        panic_message(|| queue.assert_workflow_dispatched(|wf| wf.has_edge("ship", "audit")));
    assert_eq!(
        message,
        format!(
            "expected a workflow matching the predicate to be dispatched, but none of the 1 \
             dispatched matched: {ORDER_WORKFLOW}"
        )
    );
    let message = panic_message(|| queue.assert_no_workflow_dispatched());
    assert_eq!(
        message,
        format!("expected no workflow to be dispatched, but 1 was: {ORDER_WORKFLOW}")
    );
    let message = panic_message(|| queue.assert_nothing_dispatched());
    assert_eq!(
        message,
        format!(
            "expected nothing to be dispatched, but 1 job: `import-row` on `default` was \
             dispatched, and workflows {ORDER_WORKFLOW}"
        )
    );
}

#[tokio::test]
#[should_panic(
    expected = "expected a workflow matching the predicate to be dispatched, but none of the 2 \
                dispatched matched: {charge: `charge-card`, refund: `refund` on_failure_of \
                charge}; {a: `send-email`, b: `import-row` on_complete_of a}"
)]
async fn assert_workflow_dispatched_fails_listing_the_workflows() {
    let queue = Queue::fake();
    let wf = Workflow::new();
    let charge = wf.add(
        "charge",
        queue.dispatch_named("charge-card", serde_json::json!({})),
    );
    wf.add(
        "refund",
        queue.dispatch_named("refund", serde_json::json!({})),
    )
    .on_failure_of(&charge);
    wf.dispatch().await.unwrap();
    let wf = Workflow::new();
    let a = wf.add("a", email("a@b.c"));
    wf.add("b", ImportRow { row: 2 }).on_complete_of(&a);
    wf.dispatch().await.unwrap();
    // `refund` runs on charge's failure, not after its success.
    queue.assert_workflow_dispatched(|wf| {
        wf.node("refund")
            .is_some_and(|n| n.after.contains(&"charge".to_owned()))
    });
}

#[tokio::test]
#[should_panic(
    expected = "expected a workflow matching the predicate to be dispatched, but no workflow \
                was; dispatched: 1 job: `send-email` on `mail`"
)]
async fn assert_workflow_dispatched_fails_when_none_was() {
    let queue = Queue::fake();
    email("a@b.c").dispatch().await.unwrap();
    queue.assert_workflow_dispatched(|_| true);
}

#[tokio::test]
#[should_panic(expected = "expected no workflow to be dispatched, but 1 was: {only: `import-row`}")]
async fn assert_no_workflow_dispatched_fails_listing_it() {
    let queue = Queue::fake();
    let wf = Workflow::new();
    wf.add("only", ImportRow { row: 3 });
    wf.dispatch().await.unwrap();
    queue.assert_no_workflow_dispatched();
}

#[tokio::test]
async fn fake_except_records_a_workflow_whole() {
    let real = Queue::connect("memory://").await.unwrap();
    let queue = Queue::fake_except::<ImportRow>(&real);
    let wf = Workflow::new();
    let first = wf.add("first", ImportRow { row: 1 });
    wf.add("then", email("a@b.c")).after(&first);
    wf.dispatch().await.unwrap();
    queue.assert_workflow_dispatched(|wf| {
        wf.has_edge("first", "then") && wf.count::<ImportRow>() == 1
    });
    let size = real
        .storage()
        .inspect()
        .unwrap()
        .size("default")
        .await
        .unwrap();
    assert_eq!(size.total(), 0, "nothing of it went to the real queue");
}

#[tokio::test]
async fn assertions_on_a_queue_that_is_no_fake_say_so() {
    let queue = Queue::connect("memory://").await.unwrap();
    let message = panic_message(|| queue.assert_nothing_dispatched());
    assert!(
        message.contains("work only on a queue made with Queue::fake()"),
        "{message}"
    );
    let message = panic_message(|| drop(queue.clone().except::<SendEmail>()));
    assert!(message.contains("Queue::fake_except"), "{message}");
}

// ---- inline ----

static WELCOMED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static WELCOME_RUNS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(tries = 5, backoff = "fixed:10s")]
struct Welcome {
    to: String,
}

impl Handle for Welcome {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        WELCOME_RUNS.fetch_add(1, Ordering::SeqCst);
        assert_eq!(ctx.max_attempts(), 1, "inline: one attempt");
        if self.to.is_empty() {
            return Err(JobError::msg("no address"));
        }
        WELCOMED.lock().unwrap().push(self.to);
        Ok(())
    }
}

#[tokio::test]
async fn inline_runs_a_derived_job_at_dispatch_and_returns_its_failure() {
    let queue = Queue::inline();
    Welcome { to: "a@b.c".into() }
        .dispatch()
        .delay(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        *WELCOMED.lock().unwrap(),
        ["a@b.c"],
        "ran before the dispatch returned"
    );
    let runs = WELCOME_RUNS.load(Ordering::SeqCst);
    match (Welcome { to: String::new() }).dispatch().await {
        Err(Error::JobFailed { name, reason, .. }) => {
            assert_eq!(name, "welcome");
            assert!(reason.contains("no address"), "{reason}");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    assert_eq!(
        WELCOME_RUNS.load(Ordering::SeqCst),
        runs + 1,
        "not retried, though it has 5 tries"
    );
    let failed = queue.storage().failed_store().unwrap();
    let page = failed
        .list(queue_core::storage::PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        1,
        "the failure is in the inline queue's failed store"
    );
    let size = queue
        .storage()
        .inspect()
        .unwrap()
        .size("default")
        .await
        .unwrap();
    assert_eq!(size.total(), 0, "nothing left waiting");
}

#[tokio::test]
async fn inline_runs_a_named_listener_and_refuses_unknown_names() {
    let queue = Queue::inline();
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    queue.listen("ping", move |n: u32, ctx: JobContext| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push((n, ctx.queue().to_owned()));
            Ok(())
        }
    });
    queue
        .dispatch_named("ping", serde_json::json!(7))
        .on_queue("low")
        .await
        .unwrap();
    assert_eq!(*got.lock().unwrap(), [(7, "low".to_owned())]);
    let unknown = queue
        .dispatch_named("nobody-listens", serde_json::json!({}))
        .await;
    assert!(
        matches!(&unknown, Err(Error::JobFailed { name, .. }) if name == "nobody-listens"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn inline_runs_chains_batches_and_workflows_to_their_end() {
    let queue = Queue::inline();
    let ran = Arc::new(Mutex::new(Vec::new()));
    for name in ["a", "b", "c", "bad", "catch", "finally", "then", "refund"] {
        let ran = ran.clone();
        queue.listen(name, move |_: serde_json::Value, ctx: JobContext| {
            let ran = ran.clone();
            async move {
                ran.lock().unwrap().push(ctx.name().to_owned());
                if ctx.name() == "bad" {
                    return Err(JobError::msg("bad went wrong"));
                }
                Ok(())
            }
        });
    }
    let job = |name: &str| queue.dispatch_named(name, serde_json::json!({}));
    let take = || std::mem::take(&mut *ran.lock().unwrap());

    Chain::new()
        .then(job("a"))
        .then(job("b").delay(Duration::from_secs(60)))
        .then(job("c"))
        .finally(job("finally"))
        .dispatch()
        .await
        .unwrap();
    assert_eq!(take(), ["a", "b", "c", "finally"]);

    let failed = Chain::new()
        .then(job("a"))
        .then(job("bad"))
        .then(job("c"))
        .catch(job("catch"))
        .dispatch()
        .await;
    assert!(
        matches!(&failed, Err(Error::JobFailed { name, .. }) if name == "bad"),
        "{failed:?}"
    );
    assert_eq!(take(), ["a", "bad", "catch"], "c skipped, catch ran");

    let id = Batch::new()
        .add_many([job("a"), job("b")])
        .then(job("then"))
        .dispatch()
        .await
        .unwrap();
    let mut ran_batch = take();
    ran_batch.sort();
    assert_eq!(ran_batch, ["a", "b", "then"]);
    assert!(Batch::status(&queue, &id).await.unwrap().is_finished());

    let wf = Workflow::new();
    let charge = wf.add("charge", job("bad"));
    wf.add("ship", job("c")).after(&charge);
    wf.add("refund", job("refund")).on_failure_of(&charge);
    assert!(wf.dispatch().await.is_err(), "a node failed");
    assert_eq!(take(), ["bad", "refund"]);
}

#[tokio::test]
async fn inline_runs_a_diamond_workflow_with_a_failing_node_to_its_end() {
    let queue = Queue::inline();
    let ran = Arc::new(Mutex::new(Vec::new()));
    for name in ["reserve", "charge", "email", "ship", "refund", "audit"] {
        let ran = ran.clone();
        queue.listen(name, move |_: serde_json::Value, ctx: JobContext| {
            let ran = ran.clone();
            async move {
                ran.lock().unwrap().push(ctx.name().to_owned());
                if ctx.name() == "charge" {
                    return Err(JobError::msg("card declined"));
                }
                Ok(())
            }
        });
    }
    let job = |name: &str| queue.dispatch_named(name, serde_json::json!({"order": 1}));
    // A diamond: reserve → (charge, email) → ship; refund compensates charge; audit runs
    // once charge and email ended, whatever happened.
    let wf = Workflow::new();
    let reserve = wf.add("reserve", job("reserve"));
    let charge = wf.add("charge", job("charge")).after(&reserve);
    let mail = wf.add("email", job("email")).after(&reserve);
    wf.add("ship", job("ship")).after_all([&charge, &mail]);
    wf.add("refund", job("refund")).on_failure_of(&charge);
    wf.add("audit", job("audit"))
        .on_complete_of_all([&charge, &mail]);
    let result = wf.dispatch().await;
    assert!(
        matches!(&result, Err(Error::JobFailed { name, reason, .. })
            if name == "charge" && reason.contains("card declined")),
        "{result:?}"
    );

    let ran = std::mem::take(&mut *ran.lock().unwrap());
    assert_eq!(ran.len(), 5, "every node but ship ran once: {ran:?}");
    let at = |name: &str| ran.iter().position(|n| n == name);
    assert_eq!(at("reserve"), Some(0), "{ran:?}");
    assert_eq!(at("ship"), None, "ship needed charge to succeed: {ran:?}");
    for (before, after) in [
        ("charge", "refund"),
        ("charge", "audit"),
        ("email", "audit"),
    ] {
        assert!(at(before) < at(after), "{before} before {after}: {ran:?}");
    }

    // The workflow ended: its id is the one group `wf:ID` in the store.
    let groups = queue.storage().groups().unwrap();
    let page = groups
        .list("wf:", queue_core::storage::PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "{:?}", page.items);
    let id = queue_core::WorkflowId(page.items[0].trim_start_matches("wf:").to_owned());
    let status = Workflow::status(&queue, &id).await.unwrap();
    assert!(status.is_finished(), "{status:?}");
    assert_eq!(
        (
            status.nodes,
            status.succeeded,
            status.failed,
            status.skipped
        ),
        (6, 4, 1, 1)
    );
    assert_eq!(
        groups.waiting(&format!("wf:{}:ship", id.0)).await.unwrap(),
        None
    );
    let size = queue
        .storage()
        .inspect()
        .unwrap()
        .size("default")
        .await
        .unwrap();
    assert_eq!(size.total(), 0, "nothing left queued");
}

static OUTER_SAW: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Serialize, Deserialize, Job)]
struct Outer;

impl Handle for Outer {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        // Dispatched through the default queue, from inside a job run inline.
        Inner.dispatch().await.map_err(JobError::msg)?;
        // The inner job ran before its dispatch returned.
        OUTER_SAW.store(INNER_RAN.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok(())
    }
}

static INNER_RAN: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Serialize, Deserialize, Job)]
struct Inner;

impl Handle for Inner {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        INNER_RAN.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_jobs_that_dispatch_run_those_inside_them() {
    let queue = Queue::inline();
    queue.dispatch(Outer).await.unwrap();
    assert_eq!(INNER_RAN.load(Ordering::SeqCst), 1);
    assert_eq!(OUTER_SAW.load(Ordering::SeqCst), 1);
}

// ---- fake_except ----

static CHARGED: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Serialize, Deserialize, Job)]
struct ChargeCard {
    cents: u32,
}

impl Handle for ChargeCard {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        CHARGED.fetch_add(self.cents, Ordering::SeqCst);
        // What a job run for real dispatches is recorded by the fake.
        SendEmail {
            to: "receipt@b.c".into(),
        }
        .dispatch()
        .await
        .map_err(JobError::msg)?;
        Ok(())
    }
}

#[tokio::test]
async fn fake_except_sends_the_excepted_jobs_to_the_real_queue() {
    let real = Queue::connect("memory://").await.unwrap();
    let queue = Queue::fake_except::<ImportRow>(&real).except_named("ping");
    ImportRow { row: 1 }.dispatch().await.unwrap();
    email("a@b.c").dispatch().await.unwrap();
    queue
        .dispatch_named("ping", serde_json::json!(1))
        .await
        .unwrap();
    let many = queue
        .dispatch_many([
            queue.dispatch_named("ping", serde_json::json!(2)),
            email("d@e.f").dispatch(),
        ])
        .await
        .unwrap();
    assert_eq!(many.len(), 2);
    assert!(many.iter().all(|p| p.is_created()));

    queue.assert_not_dispatched::<ImportRow>();
    queue.assert_dispatched_times::<SendEmail>(2);
    assert!(queue.dispatched_named("ping").is_empty());
    let inspect = real.storage().inspect().unwrap();
    assert_eq!(
        inspect.size("default").await.unwrap().waiting,
        3,
        "import-row and 2 pings"
    );
    assert_eq!(inspect.size("mail").await.unwrap().total(), 0);
}

#[tokio::test]
async fn fake_except_with_an_inline_queue_runs_the_excepted_jobs() {
    let real = Queue::inline();
    let queue = Queue::fake_except::<ChargeCard>(&real);
    let before = CHARGED.load(Ordering::SeqCst);
    ChargeCard { cents: 250 }.dispatch().await.unwrap();
    assert_eq!(CHARGED.load(Ordering::SeqCst), before + 250, "ran for real");
    queue.assert_not_dispatched::<ChargeCard>();
    queue.assert_dispatched_with(|e: &SendEmail| e.to == "receipt@b.c");
}
