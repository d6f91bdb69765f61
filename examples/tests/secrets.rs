//! A password in a connection URL never appears in logs, errors, `Debug` output or the failed
//! store, whichever driver the URL names, whether the connection works or not.

use std::process::{Command, Stdio};

use queue_core::storage::{self, ConnectOptions};
use queue_core::Queue;
use queue_core::StorageExt as _;

use queue_database as _;
use queue_file as _;
use queue_memcached as _;
use queue_redis as _;

const SECRET: &str = "Hunter2-s3cr3t-pw";

/// URLs with the password in them. PostgreSQL here trusts local connections, so that one
/// connects; MariaDB and Redis refuse it; memcached has no authentication.
fn urls() -> Vec<String> {
    vec![
        format!("postgres://postgres:{SECRET}@127.0.0.1:5432/test"),
        format!("mysql://root:{SECRET}@127.0.0.1:3306/test"),
        format!("redis://:{SECRET}@127.0.0.1:6379"),
        format!("redis://someone:{SECRET}@127.0.0.1:6379/0"),
        format!("memcache://user:{SECRET}@127.0.0.1:11211"),
        format!("postgres://nobody:{SECRET}@127.0.0.1:1/none"),
    ]
}

#[tokio::test]
async fn connection_errors_and_debug_output_hide_the_password() {
    for url in urls() {
        let options = ConnectOptions::new()
            .table(queue_tests::unique("secret"))
            .failed_table(queue_tests::unique("secret_failed"))
            .migrate(true);
        match storage::connect(&url, options).await {
            Ok(store) => {
                let debug = format!("{store:?} {:?}", Queue::from_arc(store.clone()));
                assert!(
                    !debug.contains(SECRET),
                    "Debug of the {} store shows the password: {debug}",
                    store.driver()
                );
                // A job that fails keeps its reason in the failed store: no password there either.
                let queue = Queue::from_arc(store.clone());
                let q = queue_tests::unique("q");
                queue
                    .dispatch_named("no-such-job", serde_json::json!({}))
                    .on_queue(q.as_str())
                    .await
                    .unwrap();
                queue
                    .worker(
                        queue_core::WorkerOptions::default()
                            .queues([q.as_str()])
                            .unknown_job_window(std::time::Duration::ZERO)
                            .stop_when_empty(),
                    )
                    .run()
                    .await
                    .unwrap();
                for failed in store
                    .failed_store()
                    .unwrap()
                    .list(queue_core::storage::PageRequest::first(100))
                    .await
                    .unwrap()
                    .items
                {
                    assert!(
                        !failed.error.contains(SECRET)
                            && !String::from_utf8_lossy(&failed.payload).contains(SECRET)
                    );
                }
            }
            Err(e) => {
                let text = format!("{e} {e:?}");
                assert!(
                    !text.contains(SECRET),
                    "the error for {} shows the password: {text}",
                    queue_core::redact_url(&url)
                );
            }
        }
    }
}

#[test]
fn runall_never_prints_the_password() {
    for url in urls() {
        for args in [
            &["size"][..],
            &["work", "--once", "--sleep", "10"][..],
            &["health"][..],
            &["failed", "list"][..],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("job.toml");
            std::fs::write(
                &config,
                format!(
                    "table = \"{}\"\nfailed_table = \"{}\"\n",
                    queue_tests::unique("secret"),
                    queue_tests::unique("secret_failed")
                ),
            )
            .unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_runall"))
                .arg("--connection")
                .arg(&url)
                .arg("--config")
                .arg(&config)
                .args(args)
                .env("QUEUE_LOG", "trace")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !text.contains(SECRET),
                "runall {args:?} printed the password: {text}"
            );
        }
    }
    // The same through the environment variable.
    let out = Command::new(env!("CARGO_BIN_EXE_runall"))
        .arg("size")
        .env(
            "QUEUE_URL",
            format!("mysql://root:{SECRET}@127.0.0.1:3306/test"),
        )
        .env("QUEUE_LOG", "trace")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(SECRET), "{text}");
    let help = Command::new(env!("CARGO_BIN_EXE_runall"))
        .arg("--help")
        .env("QUEUE_URL", format!("redis://:{SECRET}@h"))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&help.stdout).contains(SECRET),
        "--help hides the env value"
    );
}
