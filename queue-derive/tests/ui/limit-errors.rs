use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(limit = "stripe:eu", limit_key = "acount_id", max_throttle_wait = "soon")]
struct ChargeCard {
    account_id: u64,
}

impl Handle for ChargeCard {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(limit_key = "account_id")]
struct NoLimit {
    account_id: u64,
}

impl Handle for NoLimit {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
