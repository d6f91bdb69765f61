//! A job type with a secret field, through the derive: its unique key made of the secret is
//! stored as a stand-in (never the value), and equal secrets still make one claim.

use std::sync::Arc;

use queue_core::{Handle, Job, JobContext, JobError, KeyRing, Queue, QueueSettings, Secret};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "secret-payout", unique(by = ["iban"]))]
struct Payout {
    iban: Secret<String>,
    cents: u64,
}

impl Handle for Payout {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn payout(iban: &str, cents: u64) -> Payout {
    Payout {
        iban: Secret::new(iban.to_owned()),
        cents,
    }
}

#[tokio::test]
async fn a_unique_key_made_of_a_secret_is_a_stand_in() {
    let mut settings = QueueSettings::default();
    settings.keys = Some(Arc::new(KeyRing::new("k1", [9; 32]).unwrap()));
    let queue = Queue::with_settings(Arc::new(queue_core::MemoryStorage::new()), settings);
    let stored = queue
        .dispatch(payout("DE44-SECRET", 100))
        .into_new_job(queue.settings())
        .unwrap();
    let claim = stored.unique.expect("a unique job").key;
    assert!(!claim.contains("DE44"), "{claim}");
    assert!(!String::from_utf8_lossy(&stored.payload).contains("DE44"));
    let first = queue.dispatch(payout("DE44-SECRET", 100)).await.unwrap();
    assert!(first.is_created());
    let again = queue.dispatch(payout("DE44-SECRET", 250)).await.unwrap();
    assert!(
        !again.is_created(),
        "an equal secret is the same key: {again:?}"
    );
    let other = queue.dispatch(payout("FR76-OTHER", 100)).await.unwrap();
    assert!(other.is_created());
}
