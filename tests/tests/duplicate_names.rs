//! Two job types with one name in one binary: a worker refuses to start, naming both types
//! (its own test binary: the registry is per binary).

use queue_core::{Error, Handle, Job, JobContext, JobError, Queue, WorkerOptions};
use serde::{Deserialize, Serialize};

mod billing {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, Job)]
    #[job(name = "send-invoice")]
    pub(crate) struct SendInvoice {
        pub(crate) id: u64,
    }

    impl Handle for SendInvoice {
        async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
            Ok(())
        }
    }
}

mod mailing {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, Job)]
    #[job(name = "send-invoice")]
    pub(crate) struct SendInvoice {
        pub(crate) to: String,
    }

    impl Handle for SendInvoice {
        async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
            Ok(())
        }
    }
}

#[tokio::test]
async fn a_worker_refuses_two_types_with_one_name() {
    let queue = Queue::connect("memory://").await.unwrap();
    queue
        .dispatch(billing::SendInvoice { id: 1 })
        .await
        .unwrap();
    queue
        .dispatch(mailing::SendInvoice { to: "a@b.c".into() })
        .await
        .unwrap();
    let err = queue
        .worker(WorkerOptions::default().stop_when_empty())
        .run()
        .await
        .unwrap_err();
    let Error::DuplicateJobName {
        name,
        first,
        second,
    } = &err
    else {
        panic!("expected DuplicateJobName, got {err}");
    };
    assert_eq!(name, "send-invoice");
    assert!(first.ends_with("billing::SendInvoice"), "{first}");
    assert!(second.ends_with("mailing::SendInvoice"), "{second}");
    let message = err.to_string();
    assert!(message.contains("billing::SendInvoice") && message.contains("mailing::SendInvoice"));
}
