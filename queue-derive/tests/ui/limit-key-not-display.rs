use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Account {
    id: u64,
}

#[derive(Serialize, Deserialize, Job)]
#[job(limit = "stripe", limit_key = "account")]
struct ChargeCard {
    account: Account,
}

impl Handle for ChargeCard {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
