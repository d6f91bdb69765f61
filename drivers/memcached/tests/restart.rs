//! memcached restarts under a running driver: the driver reconnects, says once that the
//! state was lost, and keeps working.
//!
//! Starts its own memcached on ports 11311 and 11312 (the binary must be on PATH; outside CI
//! the tests print a skip notice when it is not, with `CI=true` they fail).

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_core::{Storage, StorageExt};
use queue_memcached::{MemcachedOptions, MemcachedStorage};
use queue_tests::{job, request};

const PORT: u16 = 11311;

/// The memcached this test started; killed when dropped, even if the test panics.
struct Server(Child);

impl Server {
    fn start(port: u16) -> Option<Server> {
        // `-u` is only used when running as root, where memcached requires it.
        let args = format!("-u root -l 127.0.0.1 -U 0 -m 64 -p {port}");
        let child = Command::new("memcached")
            .args(args.split(' '))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut server = Server(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("memcached on port {port} exited at once ({status}): is the port taken?");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("memcached on port {port} did not start listening within 10 s");
    }

    fn stop(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects what the driver logs, to check the state loss is reported once.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn binary_present() -> bool {
    Command::new("memcached")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

// One thread, so the log capture (a thread-local default subscriber) sees every event.
#[tokio::test(flavor = "current_thread")]
async fn survives_a_restart_of_memcached() {
    let url = format!("memcache://127.0.0.1:{PORT}?prefix=restart&timeout=2s");
    if !binary_present() {
        queue_tests::server_missing::<()>(&url, "the memcached binary is not on PATH");
        return;
    }
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Server::start(PORT).expect("memcached starts");
    let store = MemcachedStorage::connect(MemcachedOptions::from_url(&url).unwrap())
        .await
        .expect("connects");
    let q = "restart_q";
    store
        .push(vec![job(q, "old", b"before-1"), job(q, "old", b"before-2")])
        .await
        .unwrap();
    let held = store
        .reserve(&request(&[q], Duration::from_secs(60), 1))
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(store.inspect().unwrap().size(q).await.unwrap().total(), 2);
    assert_eq!(store.state_losses(), 0);

    server.stop();
    let down = store.push(vec![job(q, "lost", b"while-down")]).await;
    assert!(
        down.is_err(),
        "a push while memcached is down fails: {down:?}"
    );

    let server = Server::start(PORT).expect("memcached restarts");
    // The pooled connections are dead; the driver reconnects on its own.
    let ids = store
        .push(vec![job(q, "new", b"after")])
        .await
        .expect("a push after the restart works");
    assert_eq!(ids.len(), 1);
    assert_eq!(store.state_losses(), 1, "the loss was noticed");
    let got = store
        .reserve(&request(&[q], Duration::from_secs(60), 10))
        .await
        .unwrap();
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        vec![b"after".as_slice()],
        "only the job pushed after the restart exists"
    );
    assert_eq!(got[0].attempts, 1);
    assert_eq!(
        store.acknowledge(&[held[0].lease.clone()]).await.unwrap(),
        vec![false],
        "leases from before are refused"
    );
    assert_eq!(
        store.acknowledge(&[got[0].lease.clone()]).await.unwrap(),
        vec![true]
    );

    // Carries on, and says it only once.
    store.push(vec![job(q, "more", b"again")]).await.unwrap();
    let again = store
        .reserve(&request(&[q], Duration::from_secs(60), 10))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    store.acknowledge(&[again[0].lease.clone()]).await.unwrap();
    assert_eq!(store.inspect().unwrap().size(q).await.unwrap().total(), 0);
    assert_eq!(store.state_losses(), 1);
    let text = logs.text();
    let reports = text.matches("memcached lost the queue state").count();
    assert_eq!(reports, 1, "logged once at error level:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("lost the queue state")),
        "{text}"
    );
    server.stop();
}

fn send_signal(server: &Server, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(server.0.id().to_string())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{sig} worked");
}

/// No call of the driver blocks a runtime thread: with memcached frozen (SIGSTOP) for 1.5 s
/// under eight busy reservers on a single-threaded runtime, every driver call waits on the
/// server while a ticker task on the same thread keeps running on time. A client that read
/// its socket synchronously would hold the only thread, and the ticker would fall 1.5 s
/// behind.
#[test]
fn a_frozen_server_does_not_block_the_runtime() {
    let port = PORT + 1;
    let url = format!("memcache://127.0.0.1:{port}?prefix=frozen&timeout=30s");
    if !binary_present() {
        queue_tests::server_missing::<()>(&url, "the memcached binary is not on PATH");
        return;
    }
    let server = Server::start(port).expect("memcached starts");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let store = Arc::new(
            MemcachedStorage::connect(MemcachedOptions::from_url(&url).unwrap())
                .await
                .expect("connects"),
        );
        let q = "frozen_q";
        let total = 2_000;
        for chunk in 0..total / 500 {
            let jobs = (0..500)
                .map(|i| job(q, "n", format!("{}", chunk * 500 + i).as_bytes()))
                .collect();
            store.push(jobs).await.unwrap();
        }
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (store, done, stop) = (store.clone(), done.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let got = store
                        .reserve(&request(&[q], Duration::from_secs(60), 4))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        break;
                    }
                    let leases: Vec<_> = got.into_iter().map(|r| r.lease).collect();
                    store.acknowledge(&leases).await.unwrap();
                    done.fetch_add(leases.len() as u64, Ordering::Relaxed);
                    // Slow enough that the freeze lands while most jobs still wait.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        let ticking = Arc::new(AtomicBool::new(true));
        let ticker = tokio::spawn({
            let ticking = ticking.clone();
            async move {
                let mut latest = Duration::ZERO;
                while ticking.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    latest = latest.max(started.elapsed());
                }
                latest
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            done.load(Ordering::Relaxed) > 0,
            "the workers are taking jobs"
        );

        send_signal(&server, "STOP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = done.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let during = done.load(Ordering::Relaxed) - before;
        send_signal(&server, "CONT");
        ticking.store(false, Ordering::Relaxed);
        let worst_tick = ticker.await.unwrap();

        eprintln!("longest 1 ms sleep while frozen: {worst_tick:?}; done before: {before}");
        assert!(before < total as u64, "jobs were left when memcached froze");
        assert_eq!(during, 0, "no call completed while memcached was frozen");
        assert!(
            worst_tick < Duration::from_millis(300),
            "a 1 ms sleep on the runtime's only thread took {worst_tick:?} while every \
             driver call waited on the frozen server: something blocked the thread"
        );
        for worker in workers {
            worker.await.unwrap();
        }
        assert_eq!(
            done.load(Ordering::Relaxed),
            total as u64,
            "every job done after the thaw"
        );
        assert_eq!(store.inspect().unwrap().size(q).await.unwrap().total(), 0);
        stop.store(true, Ordering::Relaxed);
    });
    server.stop();
}
