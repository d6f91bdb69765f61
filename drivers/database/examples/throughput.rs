//! Temporary: end-to-end throughput through the engine, with per-operation timing.
use queue_core::{
    storage::{self, ConnectOptions},
    Capabilities, FailedJob, JobId, Lease, NewJob, Queue, QueueSize, ReserveRequest, Reserved,
    Result, Storage, WorkerOptions,
};
use queue_database as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug)]
struct Timed {
    inner: Arc<dyn Storage>,
    c: [AtomicU64; 8],
}
#[async_trait::async_trait]
impl Storage for Timed {
    fn driver(&self) -> &'static str {
        self.inner.driver()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        self.inner.push(jobs).await
    }
    async fn reserve(&self, r: &ReserveRequest) -> Result<Vec<Reserved>> {
        let t = Instant::now();
        let x = self.inner.reserve(r).await;
        self.c[0].fetch_add(1, Relaxed);
        self.c[1].fetch_add(x.as_ref().map_or(0, |v| v.len() as u64), Relaxed);
        self.c[2].fetch_add(t.elapsed().as_micros() as u64, Relaxed);
        self.c[7].fetch_add(r.limit as u64, Relaxed);
        x
    }
    async fn extend(&self, l: &Lease, d: Duration) -> Result<()> {
        self.inner.extend(l, d).await
    }
    async fn acknowledge(&self, l: &[Lease]) -> Result<Vec<bool>> {
        let t = Instant::now();
        let x = self.inner.acknowledge(l).await;
        self.c[3].fetch_add(1, Relaxed);
        self.c[4].fetch_add(l.len() as u64, Relaxed);
        self.c[5].fetch_add(t.elapsed().as_micros() as u64, Relaxed);
        x
    }
    async fn release(&self, l: &Lease, d: Duration, r: bool) -> Result<()> {
        self.inner.release(l, d, r).await
    }
    async fn fail(&self, l: &Lease, e: &str) -> Result<()> {
        self.inner.fail(l, e).await
    }
    async fn size(&self, q: &str) -> Result<QueueSize> {
        self.c[6].fetch_add(1, Relaxed);
        self.inner.size(q).await
    }
    async fn queues(&self) -> Result<Vec<String>> {
        self.inner.queues().await
    }
    async fn clear(&self, q: &str) -> Result<u64> {
        self.inner.clear(q).await
    }
    async fn failed_list(&self, o: u64, l: u64) -> Result<Vec<FailedJob>> {
        self.inner.failed_list(o, l).await
    }
    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        self.inner.failed_get(id).await
    }
    async fn failed_count(&self) -> Result<u64> {
        self.inner.failed_count().await
    }
    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        self.inner.failed_retry(id).await
    }
    async fn failed_forget(&self, id: &str) -> Result<bool> {
        self.inner.failed_forget(id).await
    }
    async fn failed_flush(&self) -> Result<u64> {
        self.inner.failed_flush().await
    }
    async fn failed_prune(&self, b: SystemTime) -> Result<u64> {
        self.inner.failed_prune(b).await
    }
    async fn lock(&self, k: &str, o: &str, t: Duration) -> Result<bool> {
        self.inner.lock(k, o, t).await
    }
    async fn unlock(&self, k: &str, o: &str) -> Result<bool> {
        self.inner.unlock(k, o).await
    }
    async fn oldest_available(&self, q: &str) -> Result<Option<SystemTime>> {
        self.inner.oldest_available(q).await
    }
    async fn add_counters(&self, d: &[(String, i64)], t: Option<Duration>) -> Result<()> {
        self.inner.add_counters(d, t).await
    }
    async fn counters(&self, p: &str) -> Result<Vec<(String, i64)>> {
        self.inner.counters(p).await
    }
    async fn wait(&self, q: &[String], t: Duration) -> Result<()> {
        self.inner.wait(q, t).await
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let c: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(8);
    let n: usize = 20000;
    let mut o = ConnectOptions::default();
    o.table = Some(format!("tp_{}", std::process::id()));
    o.failed_table = Some(format!("tp_{}_f", std::process::id()));
    o.migrate = true;
    let store = storage::connect(&url, o).await.unwrap();
    let timed = Arc::new(Timed {
        inner: store,
        c: Default::default(),
    });
    let queue = Queue::from_arc(timed.clone());
    queue.listen("noop", |_: serde_json::Value, _ctx| async { Ok(()) });
    for round in 0..3 {
        for _ in 0..n / 1000 {
            queue
                .dispatch_many((0..1000).map(|i| {
                    queue
                        .dispatch_named("noop", serde_json::json!(i))
                        .on_queue("bench")
                }))
                .await
                .unwrap();
        }
        for x in &timed.c {
            x.store(0, Relaxed);
        }
        let t = Instant::now();
        let s = queue
            .worker(
                WorkerOptions::default()
                    .queues(["bench"])
                    .concurrency(c)
                    .sleep(Duration::from_millis(10))
                    .stop_when_empty(),
            )
            .run()
            .await
            .unwrap();
        let e = t.elapsed();
        let g = |i: usize| timed.c[i].load(Relaxed);
        println!("round {round}: {} processed in {:?}: {:.0} jobs/s | reserve {} calls, {:.2} jobs/call (asked {:.2}), {:.0} us/call | ack {} calls, {:.2}/call, {:.0} us/call | size {}", s.processed, e, s.processed as f64 / e.as_secs_f64(),
      g(0), g(1) as f64 / g(0) as f64, g(7) as f64 / g(0) as f64, g(2) as f64 / g(0) as f64, g(3), g(4) as f64 / g(3) as f64, g(5) as f64 / g(3) as f64, g(6));
    }
}
