//! `#[derive(Job)]` on types that should compile: the consts it writes, the registration it
//! submits, and a derived job run end to end by a worker.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use queue_core::{Backoff, Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

/// `impl Handle` doing nothing, for types that only check consts and registration.
macro_rules! noop_handle {
    ($($ty:ty),* $(,)?) => {$(
        impl Handle for $ty {
            async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
                Ok(())
            }
        }
    )*};
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(
    name = "send-email",
    queue = "high",
    tries = 3,
    timeout = "30s",
    backoff = "exponential"
)]
struct SendEmail {
    to: String,
}

#[derive(Debug, Serialize, Deserialize, Job)]
struct PlainReport {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize, Job)]
struct HTTPPing;

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "resize:image.v2", backoff = "1s, 10s,1m", timeout = "1m30s")]
struct ResizeImage(String, u32);

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(backoff = "fixed:10s", timeout = "500ms")]
#[job(tries = 1)]
enum Cleanup {
    Files { older_than_days: u32 },
    Sessions,
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(backoff = "exponential:2s", timeout = "7")]
struct ExpTwo;

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(backoff = "exponential:1h")]
struct ExpHour;

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(backoff = "45s", timeout = "2d")]
struct SingleDurationBackoff;

mod facade {
    pub(crate) use queue_core as jobs;
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(crate = "crate::facade::jobs", name = "via-facade", tries = 2)]
struct ViaFacade;

/// Values that reach the attribute through `macro_rules!` fragments.
macro_rules! job_with {
    ($ty:ident, $name:expr, $tries:expr) => {
        #[derive(Debug, Serialize, Deserialize, Job)]
        #[job(name = $name, tries = $tries)]
        struct $ty;
    };
}
job_with!(FromMacro, "from-macro", 5);

noop_handle!(
    SendEmail,
    PlainReport,
    HTTPPing,
    ResizeImage,
    Cleanup,
    ExpTwo,
    ExpHour,
    SingleDurationBackoff,
    ViaFacade,
    FromMacro,
);

#[test]
fn all_attributes() {
    assert_eq!(SendEmail::NAME, "send-email");
    assert_eq!(SendEmail::QUEUE, "high");
    assert_eq!(SendEmail::TRIES, Some(3));
    assert_eq!(SendEmail::TIMEOUT, Some(Duration::from_secs(30)));
    assert_eq!(
        SendEmail::BACKOFF,
        Some(Backoff::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        })
    );
    assert_eq!(SendEmail::BACKOFF, Some(Backoff::default()));
}

#[test]
fn no_attributes_keeps_trait_defaults() {
    assert_eq!(<PlainReport as Job>::NAME, "plain-report");
    assert_eq!(<PlainReport as Job>::QUEUE, "default");
    assert_eq!(<PlainReport as Job>::TRIES, None);
    assert_eq!(<PlainReport as Job>::TIMEOUT, None);
    assert_eq!(<PlainReport as Job>::BACKOFF, None);
    assert_eq!(<HTTPPing as Job>::NAME, "http-ping");
}

#[test]
fn tuple_struct_with_list_backoff() {
    assert_eq!(ResizeImage::NAME, "resize:image.v2");
    assert_eq!(ResizeImage::TIMEOUT, Some(Duration::from_secs(90)));
    let list = [1, 10, 60].map(Duration::from_secs).to_vec();
    assert_eq!(ResizeImage::BACKOFF, Some(Backoff::List(Cow::Owned(list))));
    assert!(matches!(
        ResizeImage::BACKOFF,
        Some(Backoff::List(Cow::Borrowed(_)))
    ));
    assert_eq!(
        ResizeImage::BACKOFF,
        Some(Backoff::parse("1s, 10s,1m").unwrap())
    );
}

#[test]
fn enum_and_split_attributes() {
    assert_eq!(Cleanup::NAME, "cleanup");
    assert_eq!(Cleanup::TRIES, Some(1));
    assert_eq!(Cleanup::TIMEOUT, Some(Duration::from_millis(500)));
    assert_eq!(
        Cleanup::BACKOFF,
        Some(Backoff::Fixed(Duration::from_secs(10)))
    );
    let _ = Cleanup::Files { older_than_days: 7 };
    let _ = Cleanup::Sessions;
}

#[test]
fn backoff_forms_match_backoff_parse() {
    assert_eq!(
        ExpTwo::BACKOFF,
        Some(Backoff::parse("exponential:2s").unwrap())
    );
    assert_eq!(ExpTwo::TIMEOUT, Some(Duration::from_secs(7)));
    assert_eq!(
        ExpHour::BACKOFF,
        Some(Backoff::Exponential {
            base: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        })
    );
    assert_eq!(
        ExpHour::BACKOFF,
        Some(Backoff::parse("exponential:1h").unwrap())
    );
    assert_eq!(
        SingleDurationBackoff::BACKOFF,
        Some(Backoff::Fixed(Duration::from_secs(45)))
    );
    assert_eq!(
        SingleDurationBackoff::TIMEOUT,
        Some(queue_core::parse_duration("2d").unwrap())
    );
}

#[test]
fn crate_path_and_macro_fragments() {
    assert_eq!(ViaFacade::NAME, "via-facade");
    assert_eq!(ViaFacade::TRIES, Some(2));
    assert!(queue_core::registry::find("via-facade").is_some());
    assert_eq!(FromMacro::NAME, "from-macro");
    assert_eq!(FromMacro::TRIES, Some(5));
}

#[test]
fn registered_under_their_names() {
    let reg = queue_core::registry::find("send-email").expect("send-email is registered");
    assert_eq!(reg.name, SendEmail::NAME);
    assert_eq!(reg.queue, "high");
    assert_eq!(reg.tries, Some(3));
    assert_eq!(reg.timeout, Some(Duration::from_secs(30)));
    assert_eq!(reg.backoff, SendEmail::BACKOFF);

    let reg = queue_core::registry::find("resize:image.v2").expect("resize is registered");
    assert_eq!(reg.backoff, ResizeImage::BACKOFF);

    for name in [
        "plain-report",
        "http-ping",
        "cleanup",
        "exp-two",
        "exp-hour",
        "single-duration-backoff",
        "from-macro",
    ] {
        assert!(queue_core::registry::find(name).is_some(), "{name}");
    }
    let count = queue_core::registry::registered()
        .filter(|r| r.name == "send-email")
        .count();
    assert_eq!(count, 1, "registered once");
}

#[test]
fn registration_checks_payloads() {
    let reg = queue_core::registry::find("send-email").unwrap();
    let good = serde_json::value::RawValue::from_string(r#"{"to":"a@b.c"}"#.into()).unwrap();
    let bad = serde_json::value::RawValue::from_string(r#"{"from":1}"#.into()).unwrap();
    assert!(reg.check(&good).is_ok());
    assert!(reg.check(&bad).is_err());
}

static RAN: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "derive-end-to-end", queue = "e2e", tries = 1)]
struct EndToEnd {
    add: usize,
}

impl Handle for EndToEnd {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        assert_eq!(ctx.name(), "derive-end-to-end");
        assert_eq!(ctx.queue(), "e2e");
        assert_eq!(ctx.max_attempts(), 1);
        RAN.fetch_add(self.add, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_worker_runs_a_derived_job() -> queue_core::Result<()> {
    let queue = queue_core::Queue::connect("memory://").await?;
    EndToEnd { add: 2 }.dispatch().via(&queue).await?;
    EndToEnd::dispatch(EndToEnd { add: 3 }).via(&queue).await?;
    let summary = queue
        .worker(
            queue_core::WorkerOptions::default()
                .queues(["e2e"])
                .stop_when_empty(),
        )
        .run()
        .await?;
    assert_eq!(summary.processed, 2);
    assert_eq!(RAN.load(Ordering::SeqCst), 5);
    Ok(())
}
