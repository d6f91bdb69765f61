use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(unique(by = ["0"]))]
struct SyncCustomer(u64, String);

impl Handle for SyncCustomer {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
