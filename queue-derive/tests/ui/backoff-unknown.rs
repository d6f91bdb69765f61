use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(backoff = "sometimes")]
struct SendEmail {
    to: String,
}

impl Handle for SendEmail {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
