use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(max_exceptions = 0)]
struct Zero {
    n: u32,
}

#[derive(Serialize, Deserialize, Job)]
#[job(max_exceptions = "3")]
struct Quoted {
    n: u32,
}

impl Handle for Zero {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

impl Handle for Quoted {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
