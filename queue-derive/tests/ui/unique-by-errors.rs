use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(tries = 0, unique(by = ["region", "id", "region"], scope = "local", within = "0s"), timeout = "soon")]
struct SyncCustomer {
    customer_id: u64,
    region: String,
}

impl Handle for SyncCustomer {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
