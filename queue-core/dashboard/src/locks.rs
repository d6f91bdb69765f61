//! The locks page: the locks held (`without_overlapping`), with a Release button each, and
//! a form that releases a lock by its key (the only way on a store that cannot list them).

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::html;
use queue_core::storage::PageRequest;
use queue_core::{Error as QueueError, StorageExt};
use serde::Deserialize;

use crate::auth::{Viewer, CSRF_FIELD};
use crate::pages::{driver, see_other, PAGE};
use crate::view::{enc, layout, notice, time, unsupported, Place};
use crate::{Dashboard, Error, Result};

#[derive(Debug, Deserialize)]
pub(crate) struct LocksQuery {
    after: Option<String>,
    notice: Option<String>,
}

/// `GET locks`: the locks held, by key, 50 a page, each with its owner (the lease token of
/// the job holding it) and expiry.
pub(crate) async fn page(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Query(q): Query<LocksQuery>,
) -> Result<Response> {
    let storage = dash.queue.storage();
    let can_release = storage.locks().is_ok();
    let page = PageRequest {
        after: q.after.clone().filter(|a| !a.is_empty()),
        limit: PAGE,
    };
    let held = match storage.locks() {
        Ok(locks) => match locks.locks(page).await {
            Ok(held) => Ok(held),
            Err(e @ QueueError::NotSupported { .. }) => Err(e),
            Err(e) => return Err(e.into()),
        },
        Err(e) => Err(e),
    };
    let release = |key: &str| {
        html! {
            form.inline method="post" action="locks/release" {
                input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf());
                input type="hidden" name="key" value=(key);
                button type="submit" { "Release" }
            }
        }
    };
    let body = html! {
        h1 { "Locks" }
        @if let Some(n) = notice(q.notice.as_deref()) { (n) }
        p.hint {
            "A job dispatched " code { "without_overlapping" } " holds its key's lock while it runs, \
             renewed with its lease. Releasing one by hand lets another job of the key start at \
             once, even while the holder still runs."
        }
        @match &held {
            Ok(page) if page.items.is_empty() => {
                p.empty { "No lock is held" @if q.after.is_some() { " after this point" } "." }
            }
            Ok(page) => {
                table.locks {
                    thead { tr { th { "Key" } th { "Held by" } th { "Expires" } @if viewer.can_act() { th {} } } }
                    tbody {
                        @for lock in &page.items {
                            tr {
                                td { (lock.key) }
                                td { code { (lock.owner) } }
                                td { (time(lock.expires_at)) }
                                @if viewer.can_act() { td { (release(&lock.key)) } }
                            }
                        }
                    }
                }
                @if let Some(next) = &page.next {
                    p.paging { a.next rel="next" href={ "locks?after=" (enc(next)) } { "Next page" } }
                }
            }
            Err(e) => { (unsupported(e)) }
        }
        @if viewer.can_act() && can_release {
            form.release method="post" action="locks/release" {
                input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf());
                label { "Release the lock " input type="text" name="key" required; }
                " "
                button type="submit" { "Release" }
            }
        }
    };
    Ok(layout(&place, &viewer, false, "Locks", driver(&dash), body).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReleaseForm {
    key: String,
}

/// `POST locks/release` (`key`): releases the lock whoever holds it.
pub(crate) async fn release(
    State(dash): State<Dashboard>,
    form: std::result::Result<Form<ReleaseForm>, FormRejection>,
) -> Result<Response> {
    let Form(form) = form.map_err(|e| Error::Refused(format!("a lock's key is needed: {e}")))?;
    let released = dash.queue.storage().locks()?.release(&form.key).await?;
    Ok(see_other(format!(
        "../locks?notice={}",
        if released {
            "lock-released"
        } else {
            "lock-not-held"
        }
    )))
}
