//! `#[derive(Job)]` on types that should compile: the consts it writes, the registration it
//! submits, and a derived job run end to end by a worker.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use queue_core::{Backoff, Handle, Job, JobContext, JobError, OnConflict, UniqueJob, Until};
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

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(unique)]
struct OneAtATime {
    note: String,
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(unique(by = ["customer_id", "region"]))]
struct SyncCustomer {
    customer_id: u64,
    region: String,
    full: bool,
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "sync", unique(key = "sync_key"), tries = 2)]
struct SyncByMethod {
    tenant: String,
    id: u32,
}

impl SyncByMethod {
    fn sync_key(&self) -> String {
        format!("{}/{}", self.tenant, self.id)
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(unique(
    by = ["id"],
    until = "started",
    scope = "queue",
    within = "10m",
    on_conflict = "error"
))]
struct EveryOption {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(unique(by = ["id"], on_conflict = "replace"))]
struct Debounced {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(unique(
    by = ["r#type"],
    until = "terminal",
    scope = "global",
    on_conflict = "skip"
))]
struct ExplicitDefaults {
    r#type: String,
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(unique(by = ["id"], until = "succeeded", within = "1500ms"))]
#[job(name = "until-succeeded")]
struct UntilSucceeded {
    id: u64,
}

/// An enum is unique through a method, which may return any `ToString`.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(unique(key = "which", until = "started"))]
enum Refresh {
    Feed { id: u32 },
    All,
}

impl Refresh {
    fn which(&self) -> &'static str {
        match self {
            Refresh::Feed { .. } => "feed",
            Refresh::All => "all",
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(crate = "crate::facade::jobs", unique(by = ["id"], scope = "queue"))]
struct UniqueViaFacade {
    id: u8,
}

/// Settings that reach `unique(...)` through `macro_rules!` fragments.
macro_rules! unique_job_with {
    ($ty:ident, $field:literal, $until:expr) => {
        #[derive(Debug, Serialize, Deserialize, Job)]
        #[job(unique(by = [$field], until = $until))]
        struct $ty {
            id: u32,
        }
    };
}
unique_job_with!(UniqueFromMacro, "id", "started");

macro_rules! unique_key_with {
    ($ty:ident, $method:literal) => {
        #[derive(Debug, Serialize, Deserialize, Job)]
        #[job(unique(key = $method, scope = "queue"))]
        struct $ty {
            id: u32,
        }

        impl $ty {
            fn key_of(&self) -> u32 {
                self.id * 2
            }
        }
    };
}
unique_key_with!(UniqueKeyFromMacro, "key_of");

/// A limit with a key from a field and a longest wait.
#[derive(Serialize, Deserialize, Job)]
#[job(limit = "stripe", limit_key = "account_id", max_throttle_wait = "1h")]
struct ChargeCard {
    account_id: u64,
    cents: u64,
}

/// A limit with one budget for every job of the type.
#[derive(Serialize, Deserialize, Job)]
#[job(queue = "erp", limit = "erp")]
struct PushToErp {
    order: u64,
}

/// Stored encrypted.
#[derive(Serialize, Deserialize, Job)]
#[job(encrypted, queue = "payouts")]
struct Payout {
    iban: String,
}

/// The attempt budget as Laravel has it.
#[derive(Serialize, Deserialize, Job)]
#[job(tries = 25, max_exceptions = 3, retry_until = "2h", fail_on_timeout)]
struct CallsPartner {
    n: u32,
}

noop_handle!(
    CallsPartner,
    Payout,
    ChargeCard,
    PushToErp,
    Debounced,
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
    OneAtATime,
    SyncCustomer,
    SyncByMethod,
    EveryOption,
    ExplicitDefaults,
    UntilSucceeded,
    Refresh,
    UniqueViaFacade,
    UniqueFromMacro,
    UniqueKeyFromMacro,
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
fn not_unique_by_default() {
    const { assert!(!SendEmail::UNIQUE) };
    assert_eq!(SendEmail { to: "a@b.c".into() }.unique(), None);
    assert_eq!(Cleanup::Sessions.unique(), None);
}

#[test]
fn bare_unique_makes_the_type_unique() {
    const { assert!(OneAtATime::UNIQUE) };
    let unique = OneAtATime { note: "x".into() }.unique();
    assert_eq!(unique, Some(UniqueJob::key("")));
    assert_eq!(
        unique,
        OneAtATime { note: "y".into() }.unique(),
        "whatever the fields"
    );
}

#[test]
fn unique_by_fields() {
    const { assert!(SyncCustomer::UNIQUE) };
    let job = SyncCustomer {
        customer_id: 42,
        region: "eu".into(),
        full: true,
    };
    assert_eq!(
        job.unique(),
        Some(UniqueJob::key("customer_id=42,region=\"eu\""))
    );
    let other_flag = SyncCustomer { full: false, ..job };
    assert_eq!(
        other_flag.unique().unwrap().key_part(),
        "customer_id=42,region=\"eu\"",
        "fields not named in `by` are not part of the key"
    );
}

#[test]
fn unique_by_method() {
    const { assert!(SyncByMethod::UNIQUE) };
    assert_eq!(SyncByMethod::QUEUE, "sync");
    assert_eq!(SyncByMethod::TRIES, Some(2));
    let job = SyncByMethod {
        tenant: "acme".into(),
        id: 7,
    };
    assert_eq!(job.unique(), Some(UniqueJob::key("acme/7")));

    const { assert!(Refresh::UNIQUE) };
    assert_eq!(
        Refresh::Feed { id: 1 }.unique(),
        Some(UniqueJob::key("feed").until(Until::Started))
    );
    assert_eq!(
        Refresh::All.unique(),
        Some(UniqueJob::key("all").until(Until::Started))
    );
}

#[test]
fn unique_with_every_option() {
    assert_eq!(
        EveryOption { id: 3 }.unique(),
        Some(
            UniqueJob::key("id=3")
                .until(Until::Started)
                .per_queue()
                .within(Duration::from_secs(600))
                .on_conflict(OnConflict::Error)
        )
    );
    assert_eq!(
        UntilSucceeded { id: 9 }.unique(),
        Some(
            UniqueJob::key("id=9")
                .until(Until::Succeeded)
                .within(Duration::from_millis(1500))
        )
    );
    let defaults = ExplicitDefaults {
        r#type: "full".into(),
    }
    .unique()
    .unwrap();
    assert_eq!(defaults, UniqueJob::key("type=\"full\""));
    assert_eq!(defaults.until_state(), Until::Terminal);
    assert_eq!(defaults.conflict(), OnConflict::Skip);
}

#[test]
fn unique_through_a_crate_path_and_macro_fragments() {
    assert_eq!(
        UniqueViaFacade { id: 1 }.unique(),
        Some(UniqueJob::key("id=1").per_queue())
    );
    assert_eq!(
        UniqueFromMacro { id: 5 }.unique(),
        Some(UniqueJob::key("id=5").until(Until::Started))
    );
    assert_eq!(
        UniqueKeyFromMacro { id: 5 }.unique(),
        Some(UniqueJob::key("10").per_queue())
    );
}

#[test]
fn registered_unique_jobs_compute_their_key_from_the_payload() {
    let reg = queue_core::registry::find("sync-customer").expect("registered");
    let data = serde_json::value::RawValue::from_string(
        r#"{"customer_id":1,"region":"us","full":false}"#.into(),
    )
    .unwrap();
    assert_eq!(
        reg.unique_of(&data),
        Ok(Some(UniqueJob::key("customer_id=1,region=\"us\"")))
    );
    let reg = queue_core::registry::find("send-email").unwrap();
    let data = serde_json::value::RawValue::from_string(r#"{"to":"a@b.c"}"#.into()).unwrap();
    assert_eq!(reg.unique_of(&data), Ok(None));
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

#[test]
fn unique_replacing_a_queued_job() {
    assert_eq!(
        Debounced { id: 3 }.unique(),
        Some(UniqueJob::key("id=3").on_conflict(OnConflict::Replace))
    );
}

#[test]
fn limits_from_attributes() {
    use queue_core::JobLimit;
    const { assert!(ChargeCard::LIMITED && PushToErp::LIMITED && !SendEmail::LIMITED) };
    assert_eq!(
        ChargeCard {
            account_id: 42,
            cents: 100
        }
        .limit(),
        Some(
            JobLimit::new("stripe")
                .key(42)
                .max_wait(Duration::from_secs(3600))
        )
    );
    assert_eq!(PushToErp { order: 1 }.limit(), Some(JobLimit::new("erp")));
    assert_eq!(SendEmail { to: "a@b.c".into() }.limit(), None);
    // A string-named dispatch of a registered type counts its limit too.
    let registration = queue_core::registry::find("charge-card").unwrap();
    let data = serde_json::value::RawValue::from_string(r#"{"account_id":7,"cents":1}"#.to_owned())
        .unwrap();
    assert_eq!(
        registration.limit_of(&data).unwrap(),
        Some(
            JobLimit::new("stripe")
                .key(7)
                .max_wait(Duration::from_secs(3600))
        )
    );
}

#[test]
fn encrypted_types_are_sealed_at_dispatch() {
    const { assert!(Payout::ENCRYPTED && !SendEmail::ENCRYPTED) };
    let mut settings = queue_core::QueueSettings::default();
    settings.keys = Some(std::sync::Arc::new(
        queue_core::KeyRing::new("k1", [3; 32]).unwrap(),
    ));
    let job = Payout {
        iban: "DE-secret".into(),
    }
    .dispatch()
    .into_new_job(&settings)
    .unwrap();
    let text = String::from_utf8(job.payload).unwrap();
    assert!(text.contains(r#""sealed":"rq1:k1:"#), "{text}");
    assert!(!text.contains("DE-secret"), "{text}");
    assert!(queue_core::registry::find("payout").unwrap().encrypted);
    // Without keys the dispatch is refused.
    settings.keys = None;
    let err = Payout { iban: "x".into() }
        .dispatch()
        .into_new_job(&settings)
        .unwrap_err();
    assert!(err.to_string().contains("RUNALL_KEYS"), "{err}");
}

#[test]
fn attempt_budget_attributes() {
    assert_eq!(CallsPartner::RETRY_UNTIL, Some(Duration::from_secs(7200)));
    const { assert!(CallsPartner::FAIL_ON_TIMEOUT && !SendEmail::FAIL_ON_TIMEOUT) };
    assert_eq!(SendEmail::RETRY_UNTIL, None);
    assert_eq!(
        (CallsPartner::MAX_EXCEPTIONS, SendEmail::MAX_EXCEPTIONS),
        (Some(3), None)
    );
    let registration = queue_core::registry::find("calls-partner").unwrap();
    assert_eq!(registration.max_exceptions, Some(3));
    assert_eq!(
        (registration.retry_until, registration.fail_on_timeout),
        (Some(Duration::from_secs(7200)), true)
    );
}
