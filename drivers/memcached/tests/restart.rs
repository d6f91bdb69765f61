//! memcached restarts under a running driver: the driver reconnects, says once that the
//! state was lost, and keeps working.
//!
//! Starts its own memcached on port 11311 (the binary must be on PATH; outside CI the test
//! prints a skip notice when it is not, with `CI=true` it fails).

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_core::Storage;
use queue_memcached::{MemcachedOptions, MemcachedStorage};
use queue_tests::{job, request};

const PORT: u16 = 11311;

/// The memcached this test started; killed when dropped, even if the test panics.
struct Server(Child);

impl Server {
    fn start() -> Option<Server> {
        let child = Command::new("memcached")
            // `-u` is only used when running as root, where memcached requires it.
            .args([
                "-u",
                "root",
                "-l",
                "127.0.0.1",
                "-p",
                &PORT.to_string(),
                "-U",
                "0",
                "-m",
                "64",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut server = Server(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("memcached on port {PORT} exited at once ({status}): is the port taken?");
            }
            if TcpStream::connect(("127.0.0.1", PORT)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("memcached on port {PORT} did not start listening within 10 s");
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
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

    let server = Server::start().expect("memcached starts");
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
    assert_eq!(store.size(q).await.unwrap().total(), 2);
    assert_eq!(store.state_losses(), 0);

    server.stop();
    let down = store.push(vec![job(q, "lost", b"while-down")]).await;
    assert!(
        down.is_err(),
        "a push while memcached is down fails: {down:?}"
    );

    let server = Server::start().expect("memcached restarts");
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
    assert_eq!(store.size(q).await.unwrap().total(), 0);
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
