use queue_core::Job;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
struct Envelope<T> {
    payload: T,
}

fn main() {}
