use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(unique(by = ["customer_id"], ttl = "10m"))]
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
