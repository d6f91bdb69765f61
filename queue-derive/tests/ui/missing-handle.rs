use queue_core::Job;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(name = "send-email")]
struct SendEmail {
    to: String,
}

fn main() {}
