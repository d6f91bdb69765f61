//! Without a default connection, a typed dispatch fails with a clear error (its own test
//! binary: the default is process-wide).

use queue_core::{Error, Queue};

#[tokio::test]
async fn dispatch_without_a_default_queue_is_a_clear_error() {
    let err = Queue::default_dispatcher().unwrap_err();
    assert!(matches!(err, Error::NoDefaultQueue));
    assert!(err.to_string().contains("Queue::set_default"), "{err}");
    let memory = Queue::connect("memory://").await.unwrap();
    Queue::set_default(memory.clone());
    assert!(Queue::default_dispatcher().is_ok());
    let err = queue_core::storage::connect("nosuch://x", Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no driver for `nosuch` URLs"),
        "{err}"
    );
}
