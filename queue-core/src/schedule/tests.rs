use super::*;

fn ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>()
        .expect("a timestamp")
        .as_millisecond()
}

fn iso(t: i64) -> String {
    jiff::Timestamp::from_millisecond(t)
        .expect("in range")
        .to_string()
}

fn cron(expr: &str, tz: &str) -> When {
    Schedule::cron(expr).tz(tz).when.expect("valid")
}

/// The ticks strictly after `from`, `n` of them.
fn ticks(when: &When, from: &str, n: usize) -> Vec<String> {
    let mut at = ms(from);
    (0..n)
        .map(|_| {
            at = when.next_after(at).expect("a next tick");
            iso(at)
        })
        .collect()
}

#[test]
fn every_ticks_on_multiples_of_the_period() {
    let when = When::Every(Duration::from_secs(10));
    assert_eq!(
        ticks(&when, "2026-12-06T10:00:03Z", 3),
        [
            "2026-12-06T10:00:10Z",
            "2026-12-06T10:00:20Z",
            "2026-12-06T10:00:30Z"
        ]
    );
    assert_eq!(
        iso(when.at_or_before(ms("2026-12-06T10:00:20Z")).unwrap()),
        "2026-12-06T10:00:20Z"
    );
    assert_eq!(
        count_between(
            &when,
            ms("2026-12-06T10:00:00Z"),
            ms("2026-12-06T10:01:00Z")
        ),
        6
    );
}

#[test]
fn every_ignores_daylight_saving_time() {
    // Across Berlin's spring-forward night, an hourly schedule stays an hour apart.
    let when = When::Every(Duration::from_secs(3600));
    assert_eq!(
        ticks(&when, "2026-03-29T00:30:00Z", 3),
        [
            "2026-03-29T01:00:00Z",
            "2026-03-29T02:00:00Z",
            "2026-03-29T03:00:00Z"
        ]
    );
}

#[test]
fn cron_in_a_time_zone() {
    let when = cron("0 3 * * *", "Asia/Jakarta");
    // 03:00 in Jakarta (UTC+7) is 20:00 UTC the day before.
    assert_eq!(
        ticks(&when, "2026-12-06T12:00:00Z", 2),
        ["2026-12-06T20:00:00Z", "2026-12-07T20:00:00Z"]
    );
}

#[test]
fn berlin_spring_forward_runs_a_missing_time_once_just_after() {
    // 2026-03-29: Berlin goes from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    let when = cron("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        ticks(&when, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST, the first instant after the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]
    );
}

#[test]
fn berlin_fall_back_runs_a_repeated_time_once_the_first_time() {
    // 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
    let when = cron("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        ticks(&when, "2026-10-24T12:00:00Z", 3),
        [
            "2026-10-25T00:30:00Z", // 02:30 CEST, the first time
            "2026-10-26T01:30:00Z", // 02:30 CET
            "2026-10-27T01:30:00Z",
        ]
    );
}

#[test]
fn new_york_daylight_saving_time() {
    // 2026-03-08: 02:00 EST -> 03:00 EDT. 2026-11-01: 02:00 EDT -> 01:00 EST.
    let when = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        ticks(&when, "2026-03-07T12:00:00Z", 2),
        [
            "2026-03-08T07:00:00Z", // 03:00 EDT, the first instant after the gap
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ]
    );
    let when = cron("30 1 * * *", "America/New_York");
    assert_eq!(
        ticks(&when, "2026-10-31T12:00:00Z", 2),
        [
            "2026-11-01T05:30:00Z", // 01:30 EDT, the first time
            "2026-11-02T06:30:00Z", // 01:30 EST
        ]
    );
}

#[test]
fn bad_schedules_are_refused_with_the_reason() {
    let job = || PendingDispatch::named("j", &serde_json::json!({}));
    let err = Schedule::cron("61 * * * *")
        .dispatch(job())
        .check()
        .unwrap_err();
    assert!(
        err.to_string().contains("bad cron expression `61 * * * *`"),
        "{err}"
    );
    let err = Schedule::cron("0 3 * * *")
        .tz("Mars/Olympus")
        .dispatch(job())
        .check()
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown time zone `Mars/Olympus`"),
        "{err}"
    );
    let err = Schedule::every(Duration::from_millis(10))
        .dispatch(job())
        .check()
        .unwrap_err();
    assert!(err.to_string().contains("at least 1s"), "{err}");
    let err = Schedule::every(Duration::from_secs(1)).check().unwrap_err();
    assert!(err.to_string().contains("no job"), "{err}");
    let err = Schedule::every(Duration::from_secs(1))
        .dispatch(job().unique_key("k"))
        .check()
        .unwrap_err();
    assert!(err.to_string().contains("is unique"), "{err}");
    let ok = Schedule::every(Duration::from_secs(1))
        .dispatch(job())
        .check()
        .unwrap();
    assert_eq!(ok.id_str(), "j", "the job's name by default");
}

#[test]
fn the_spec_hash_follows_the_timing_only() {
    let job = || PendingDispatch::named("j", &serde_json::json!({}));
    let a = Schedule::every(Duration::from_secs(10)).dispatch(job());
    let b = Schedule::every(Duration::from_secs(10))
        .id("other")
        .dispatch(job());
    let c = Schedule::every(Duration::from_secs(20)).dispatch(job());
    assert_eq!(a.spec_hash(), b.spec_hash());
    assert_ne!(a.spec_hash(), c.spec_hash());
    assert!(a.spec_hash() > 0 && a.spec_hash() <= SPEC_MASK);
}

#[test]
fn catching_up_counts_a_repeated_hour_once() {
    let when = cron("30 2 * * *", "Europe/Berlin");
    // Due at the first 02:30 (00:30 UTC), looked at after the second one (01:30 UTC).
    let (latest, before) = latest_due(
        &when,
        ms("2026-10-25T00:30:00Z"),
        ms("2026-10-25T01:40:00Z"),
    );
    assert_eq!((iso(latest).as_str(), before), ("2026-10-25T00:30:00Z", 0));
    // Three days late: the latest tick runs, two were missed.
    let (latest, before) = latest_due(
        &when,
        ms("2026-10-25T00:30:00Z"),
        ms("2026-10-27T12:00:00Z"),
    );
    assert_eq!((iso(latest).as_str(), before), ("2026-10-27T01:30:00Z", 2));
    let every = When::Every(Duration::from_secs(60));
    let (latest, before) = latest_due(
        &every,
        ms("2026-12-06T10:00:00Z"),
        ms("2026-12-06T10:59:30Z"),
    );
    assert_eq!((iso(latest).as_str(), before), ("2026-12-06T10:59:00Z", 59));
}

/// A queue on a fresh memory store with one schedule of `every 1s` pushing `tick` jobs.
async fn memory_schedule(
    configure: impl FnOnce(Schedule) -> Schedule,
) -> (crate::Queue, Arc<Schedule>) {
    let queue = crate::Queue::connect("memory://").await.expect("memory");
    let schedule = configure(
        Schedule::every(Duration::from_secs(1))
            .id("s")
            .dispatch(PendingDispatch::named("tick", &serde_json::json!({})).on_queue("q")),
    );
    queue.schedule(schedule).expect("a good schedule");
    let schedule = queue.schedule_list().remove(0);
    (queue, schedule)
}

async fn waiting(queue: &crate::Queue) -> u64 {
    use crate::StorageExt;
    queue
        .storage()
        .inspect()
        .unwrap()
        .size("q")
        .await
        .unwrap()
        .waiting
}

/// Moves the schedule's next tick `secs` seconds back, as if every worker had been down.
async fn rewind(queue: &crate::Queue, schedule: &Schedule, secs: i64) {
    let d: &Dispatcher = queue.as_ref();
    let next = d.counters(&schedule.group()).await.unwrap().get("next");
    let applied = d
        .groups()
        .unwrap()
        .apply_if(
            Guard::new(schedule.group(), "next", next, next - secs * 1000),
            vec![],
        )
        .await
        .unwrap();
    assert!(applied);
}

#[tokio::test]
async fn the_first_look_sets_the_next_tick_and_a_due_tick_runs_once() {
    let (queue, schedule) = memory_schedule(|s| s).await;
    let d: &Dispatcher = queue.as_ref();
    let wake = tick(d, &schedule)
        .await
        .unwrap()
        .next()
        .expect("a next tick");
    assert!(wake > SystemTime::now(), "nothing due on the first look");
    assert_eq!(waiting(&queue).await, 0);
    rewind(&queue, &schedule, 1).await;
    tick(d, &schedule).await.unwrap();
    tick(d, &schedule).await.unwrap();
    assert_eq!(waiting(&queue).await, 1, "one job for the due tick");
    let state = crate::schedule::state(d, &schedule).await.unwrap();
    assert_eq!((state.ticks, state.missed), (1, 0));
    assert!(state.next.unwrap() > SystemTime::now());
}

#[tokio::test]
async fn catch_up_latest_runs_once_and_counts_the_missed() {
    let (queue, schedule) = memory_schedule(|s| s.overlap(Overlap::Allow)).await;
    let d: &Dispatcher = queue.as_ref();
    tick(d, &schedule).await.unwrap();
    rewind(&queue, &schedule, 10).await;
    tick(d, &schedule).await.unwrap();
    assert_eq!(waiting(&queue).await, 1);
    let state = crate::schedule::state(d, &schedule).await.unwrap();
    assert_eq!(state.ticks, 1);
    assert!((9..=10).contains(&state.missed), "{state:?}");
}

#[tokio::test]
async fn catch_up_all_runs_each_missed_tick_up_to_its_bound() {
    let (queue, schedule) =
        memory_schedule(|s| s.overlap(Overlap::Allow).catch_up(CatchUp::All { max: 3 })).await;
    let d: &Dispatcher = queue.as_ref();
    tick(d, &schedule).await.unwrap();
    rewind(&queue, &schedule, 10).await;
    tick(d, &schedule).await.unwrap();
    assert_eq!(waiting(&queue).await, 3, "the three latest missed ticks");
    let state = crate::schedule::state(d, &schedule).await.unwrap();
    assert_eq!(state.ticks, 3);
    assert!((7..=8).contains(&state.missed), "{state:?}");
}

#[tokio::test]
async fn overlap_skip_pushes_nothing_while_a_run_is_queued() {
    let (queue, schedule) = memory_schedule(|s| s).await;
    let d: &Dispatcher = queue.as_ref();
    tick(d, &schedule).await.unwrap();
    rewind(&queue, &schedule, 1).await;
    tick(d, &schedule).await.unwrap();
    rewind(&queue, &schedule, 1).await;
    tick(d, &schedule).await.unwrap();
    assert_eq!(
        waiting(&queue).await,
        1,
        "the second tick found the first run queued"
    );
    assert_eq!(crate::schedule::state(d, &schedule).await.unwrap().ticks, 2);
    assert!(
        !queue.run_schedule_now("s").await.unwrap(),
        "held back the same way"
    );
}

#[tokio::test]
async fn paused_schedules_claim_nothing_and_limits_end_them() {
    let (queue, schedule) = memory_schedule(|s| s.overlap(Overlap::Allow).limit(2)).await;
    let d: &Dispatcher = queue.as_ref();
    tick(d, &schedule).await.unwrap();
    queue.pause_schedule("s").await.unwrap();
    rewind(&queue, &schedule, 1).await;
    assert_eq!(tick(d, &schedule).await.unwrap(), Look::Paused);
    assert_eq!(waiting(&queue).await, 0);
    assert!(queue.schedule_state("s").await.unwrap().paused);
    queue.resume_schedule("s").await.unwrap();
    tick(d, &schedule).await.unwrap();
    assert_eq!(waiting(&queue).await, 1);
    // (Rewound within one second, a tick is the one that just ran, whose job holds its
    // claim: the ticks are counted, their jobs pushed once.)
    for _ in 0..3 {
        rewind(&queue, &schedule, 1).await;
        tick(d, &schedule).await.unwrap();
    }
    assert_eq!(
        queue.schedule_state("s").await.unwrap().ticks,
        2,
        "limit(2)"
    );
    rewind(&queue, &schedule, 1).await;
    assert_eq!(tick(d, &schedule).await.unwrap(), Look::Ended, "ended");
    assert!(
        queue.run_schedule_now("s").await.unwrap(),
        "run-now is outside the limit"
    );
    let err = queue.schedule_state("nope").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn a_changed_timing_starts_again_from_now() {
    let (queue, schedule) = memory_schedule(|s| s).await;
    let d: &Dispatcher = queue.as_ref();
    tick(d, &schedule).await.unwrap();
    rewind(&queue, &schedule, 3600).await;
    // The same id with another period (a deploy changed it): the old state is not caught up.
    let changed = Arc::new(
        Schedule::every(Duration::from_secs(2))
            .id("s")
            .dispatch(PendingDispatch::named("tick", &serde_json::json!({})).on_queue("q"))
            .check()
            .unwrap(),
    );
    tick(d, &changed).await.unwrap();
    assert_eq!(waiting(&queue).await, 0);
    let state = crate::schedule::state(d, &changed).await.unwrap();
    assert!(state.next.unwrap() > SystemTime::now());
}

/// Takes the next job of `q`, as a worker starting it would.
async fn start(queue: &crate::Queue) -> crate::storage::Reserved {
    let request = crate::storage::ReserveRequest::new(["q"], Duration::from_secs(60), 1);
    queue
        .storage()
        .reserve(&request)
        .await
        .unwrap()
        .pop()
        .expect("a job to start")
}

/// Ends a started job with success, its envelope's effects in its settle step, as a worker
/// does.
async fn succeed(queue: &crate::Queue, job: crate::storage::Reserved) {
    let envelope = crate::envelope::Envelope::decode(&job.payload).unwrap();
    let mut settle = crate::storage::Settle::ack(job.lease);
    if let Some(after) = envelope.after {
        settle.effects = after
            .succeeded
            .iter()
            .map(crate::envelope::Step::effect)
            .collect();
    }
    queue.storage().settle(vec![settle], None).await.unwrap();
}

async fn buffered(queue: &crate::Queue) -> Option<i64> {
    let d: &Dispatcher = queue.as_ref();
    d.groups()
        .unwrap()
        .waiting("schedule:s#buffer")
        .await
        .unwrap()
}

#[tokio::test]
async fn overlap_buffer_one_keeps_one_run_pending_until_the_running_one_ends() {
    let (queue, schedule) = memory_schedule(|s| s.overlap(Overlap::BufferOne)).await;
    let d: &Dispatcher = queue.as_ref();
    let runs = |queue: &crate::Queue| {
        let queue = queue.clone();
        async move { queue.schedule_state("s").await.unwrap().runs }
    };
    tick(d, &schedule).await.unwrap();
    rewind(&queue, &schedule, 1).await;
    tick(d, &schedule).await.unwrap();
    assert_eq!(waiting(&queue).await, 1, "nothing ran: pushed at once");
    assert_eq!(runs(&queue).await, 1);
    let first = start(&queue).await;
    // A tick while it runs: held, not queued.
    rewind(&queue, &schedule, 1).await;
    tick(d, &schedule).await.unwrap();
    assert_eq!(waiting(&queue).await, 0);
    assert_eq!(buffered(&queue).await, Some(1));
    assert_eq!(runs(&queue).await, 2);
    // Another: dropped, counted as a tick (as Skip counts them).
    rewind(&queue, &schedule, 1).await;
    tick(d, &schedule).await.unwrap();
    let state = queue.schedule_state("s").await.unwrap();
    assert_eq!(
        (state.ticks, state.runs, state.missed),
        (3, 2, 0),
        "{state:?}"
    );
    assert!(!queue.run_schedule_now("s").await.unwrap(), "one buffered");
    // The end of the running one releases the buffered one, in its settle step.
    succeed(&queue, first).await;
    assert_eq!(waiting(&queue).await, 1);
    assert_eq!(buffered(&queue).await, None);
    assert_eq!(runs(&queue).await, 1);
    // Run-now while one is queued: buffered behind it.
    assert!(queue.run_schedule_now("s").await.unwrap());
    assert_eq!((waiting(&queue).await, runs(&queue).await), (1, 2));
    let second = start(&queue).await;
    succeed(&queue, second).await;
    let third = start(&queue).await;
    succeed(&queue, third).await;
    assert_eq!((waiting(&queue).await, runs(&queue).await), (0, 0));
    // Nothing running: at once.
    assert!(queue.run_schedule_now("s").await.unwrap());
    assert_eq!((waiting(&queue).await, runs(&queue).await), (1, 1));
}

#[tokio::test]
async fn buffer_one_is_part_of_the_spec_hash() {
    let every = || {
        Schedule::every(Duration::from_secs(5))
            .id("x")
            .dispatch(PendingDispatch::named("tick", &serde_json::json!({})))
    };
    assert_eq!(
        every().spec_hash(),
        every().overlap(Overlap::Allow).spec_hash()
    );
    assert_ne!(
        every().spec_hash(),
        every().overlap(Overlap::BufferOne).spec_hash()
    );
    assert_eq!("buffer_one".parse::<Overlap>(), Ok(Overlap::BufferOne));
    assert!("buffer".parse::<Overlap>().is_err());
}

#[test]
fn readable_definitions_round_trip_through_counters() {
    for len in [0usize, 1, 5, 6, 7, 12, 250, 4097] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
        let words = stored::tests_words(&bytes);
        assert_eq!(words.len(), len.div_ceil(6));
        assert!(words.iter().all(|w| (0..1 << 48).contains(w)));
        assert_eq!(stored::tests_unwords(&words, len), bytes);
    }
}

#[tokio::test]
async fn stored_definitions_are_readable_and_run_now() {
    let queue = crate::Queue::connect("memory://").await.expect("memory");
    let d: &Dispatcher = queue.as_ref();
    let schedule = |secs: u64, overlap: Overlap| {
        Schedule::every(Duration::from_secs(secs))
            .overlap(overlap)
            .dispatch(PendingDispatch::named("tick", &serde_json::json!({"n": 1})).on_queue("q"))
    };
    assert!(matches!(
        queue.run_schedule_now("m:1").await.unwrap_err(),
        Error::NotFound { .. }
    ));
    Schedules::upsert_via(&queue, "m:1", schedule(30, Overlap::Skip))
        .await
        .unwrap();
    let read = stored::definition(d, "m:1").await.unwrap().unwrap();
    assert_eq!(
        (read.id_str(), read.describe()),
        ("m:1", "every 30s".into())
    );
    assert_eq!(
        queue.schedule_state("m:1").await.unwrap().when,
        "every 30s (stored)"
    );
    assert!(queue.run_schedule_now("m:1").await.unwrap());
    assert!(!queue.run_schedule_now("m:1").await.unwrap(), "Skip");
    assert_eq!(waiting(&queue).await, 1);
    // Changed: the readable copy follows, whatever its length.
    let long = Schedule::every(Duration::from_secs(7))
        .overlap(Overlap::BufferOne)
        .dispatch(
            PendingDispatch::named("tick", &serde_json::json!({"text": "x".repeat(900)}))
                .on_queue("q"),
        );
    Schedules::upsert_via(&queue, "m:1", long).await.unwrap();
    let read = stored::definition(d, "m:1").await.unwrap().unwrap();
    assert_eq!(read.overlap_policy(), Overlap::BufferOne);
    assert_eq!(read.describe(), "every 7s");
    Schedules::upsert_via(&queue, "m:1", schedule(30, Overlap::Allow))
        .await
        .unwrap();
    let read = stored::definition(d, "m:1").await.unwrap().unwrap();
    assert_eq!(read.overlap_policy(), Overlap::Allow);
    assert!(queue.run_schedule_now("m:1").await.unwrap());
    assert!(Schedules::remove_via(&queue, "m:1").await.unwrap());
    assert!(stored::definition(d, "m:1").await.unwrap().is_none());
    assert!(matches!(
        queue.run_schedule_now("m:1").await.unwrap_err(),
        Error::NotFound { .. }
    ));
    // Created again after its removal: read from nothing.
    Schedules::upsert_via(&queue, "m:1", schedule(30, Overlap::Skip))
        .await
        .unwrap();
    let read = stored::definition(d, "m:1").await.unwrap().unwrap();
    assert_eq!(read.overlap_policy(), Overlap::Skip);
}

#[tokio::test]
async fn a_buffer_one_run_cancelled_before_it_started_ends_its_run() {
    let (queue, schedule) = memory_schedule(|s| s.overlap(Overlap::BufferOne)).await;
    let d: &Dispatcher = queue.as_ref();
    tick(d, &schedule).await.unwrap();
    rewind(&queue, &schedule, 1).await;
    tick(d, &schedule).await.unwrap();
    assert_eq!(waiting(&queue).await, 1);
    assert_eq!(queue.schedule_state("s").await.unwrap().runs, 1);
    use crate::StorageExt;
    let queued = queue
        .storage()
        .inspect()
        .unwrap()
        .jobs(
            "q",
            crate::storage::JobState::Waiting,
            crate::storage::PageRequest::first(10),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(queued.len(), 1);
    let cancelled = queue.cancel(&queued[0].id).await.unwrap();
    assert!(
        matches!(cancelled, crate::CancelOutcome::Cancelled(_)),
        "{cancelled:?}"
    );
    // Its end was applied with its removal: the schedule runs its next tick at once.
    assert_eq!(queue.schedule_state("s").await.unwrap().runs, 0);
    rewind(&queue, &schedule, 1).await;
    tick(d, &schedule).await.unwrap();
    assert_eq!(waiting(&queue).await, 1, "the next tick ran");
}
