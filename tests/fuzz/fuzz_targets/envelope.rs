//! Any bytes a store hands back go through the same decoding a worker does: the envelope,
//! then the job's own data into a typed job and into a listener's `serde_json::Value`.
//! None of it may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_core::envelope::Envelope;
use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "fuzzed", tries = 2, timeout = "1s")]
struct Fuzzed {
    to: String,
    n: u64,
    tags: Vec<String>,
    nested: Option<Box<Fuzzed>>,
}

impl Handle for Fuzzed {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fuzz_target!(|bytes: &[u8]| {
    if let Ok(envelope) = Envelope::decode(bytes) {
        let registration = queue_core::registry::find("fuzzed").expect("registered");
        let _ = registration.check(&envelope.data);
        let _ = serde_json::from_str::<serde_json::Value>(envelope.data.get());
        // Whatever decoded must encode again.
        let again = envelope.encode().expect("a decoded envelope encodes");
        let _ = Envelope::decode(&again).expect("and decodes again");
    }
});
