//! Failed jobs grouped by error fingerprint: the job's name and the first line of its error
//! with numbers, ids and hex strings masked, so "order 1234 not found" and "order 98 not
//! found" are one group. Each group can be retried or deleted whole, after a page that
//! shows how many jobs that touches (the dry run).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::html;
use queue_core::storage::{FailedJob, PageRequest};
use queue_core::StorageExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::Viewer;
use crate::bulk::start_on_failed;
use crate::pages::{csrf_input, driver, see_other};
use crate::view::{enc, layout, one_line, time, Place};
use crate::{Dashboard, Error, Result};

/// The most failed jobs a grouping reads, newest first: a store holding more groups the
/// newest ones, and the page says so.
pub(crate) const SCAN: usize = 10_000;
/// The most characters of an error's first line a fingerprint keeps.
const KEPT: usize = 200;

/// The first line of `error` with every run of digits as `N` and every word of 8 or more
/// characters holding a digit (an id, a hash, a UUID part) as `X`, cut to 200 characters.
pub(crate) fn mask(error: &str) -> String {
    let line = error.lines().next().unwrap_or_default();
    let mut out = String::with_capacity(line.len().min(KEPT));
    for (i, word) in line.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let idish = word.chars().count() >= 8
            && word.chars().any(|c| c.is_ascii_digit())
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
        if idish {
            out.push('X');
            continue;
        }
        let mut in_digits = false;
        for c in word.chars() {
            if c.is_ascii_digit() {
                if !in_digits {
                    out.push('N');
                }
                in_digits = true;
            } else {
                in_digits = false;
                out.push(c);
            }
        }
    }
    one_line(&out, KEPT)
}

/// A group's key in URLs: 16 hex digits of SHA-256 over the job name and the masked error.
pub(crate) fn key(name: &str, masked: &str) -> String {
    let digest = Sha256::digest(format!("{name}\n{masked}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One group of failed jobs.
#[derive(Debug)]
pub(crate) struct FailedGroup {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) masked: String,
    pub(crate) queues: Vec<String>,
    /// Each job's id and when it failed, newest first.
    pub(crate) jobs: Vec<(String, SystemTime)>,
    pub(crate) newest: SystemTime,
    pub(crate) oldest: SystemTime,
}

/// The newest [`SCAN`] failed jobs, grouped, the largest group first; and whether the store
/// holds more than were read.
pub(crate) async fn groups(dash: &Dashboard) -> Result<(Vec<FailedGroup>, bool)> {
    let store = dash.queue.storage().failed_store()?;
    let mut groups: HashMap<String, FailedGroup> = HashMap::new();
    let mut page = PageRequest::first(500);
    let mut read = 0;
    let mut more = false;
    loop {
        let got = store.list(page).await?;
        for job in &got.items {
            add(&mut groups, job);
        }
        read += got.items.len();
        match got.next {
            Some(_) if read >= SCAN => {
                more = true;
                break;
            }
            Some(next) => page = PageRequest::after(next, 500),
            None => break,
        }
    }
    let mut groups: Vec<FailedGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        b.jobs
            .len()
            .cmp(&a.jobs.len())
            .then(b.newest.cmp(&a.newest))
    });
    Ok((groups, more))
}

fn add(groups: &mut HashMap<String, FailedGroup>, job: &FailedJob) {
    let masked = mask(&job.error);
    let key = key(&job.name, &masked);
    let group = groups.entry(key.clone()).or_insert_with(|| FailedGroup {
        key,
        name: job.name.clone(),
        masked,
        queues: Vec::new(),
        jobs: Vec::new(),
        newest: job.failed_at,
        oldest: job.failed_at,
    });
    if !group.queues.contains(&job.queue) {
        group.queues.push(job.queue.clone());
    }
    group.jobs.push((job.id.clone(), job.failed_at));
    group.newest = group.newest.max(job.failed_at);
    group.oldest = group.oldest.min(job.failed_at);
}

/// `GET failed/groups`: the failed jobs by fingerprint, with their counts.
pub(crate) async fn list(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
) -> Result<Response> {
    let (groups, more) = groups(&dash).await?;
    let body = html! {
        p.crumbs { a href="../failed" { "Failed jobs" } " / by error" }
        h1 { "Failed jobs by error" }
        p {
            "Grouped by job name and the error's first line with numbers and ids masked. "
            @if more { strong { "The newest " (SCAN) " failed jobs only." } }
        }
        @if groups.is_empty() {
            p.empty { "No failed job." }
        } @else {
            table.failed-groups {
                thead { tr {
                    th.n { "Jobs" } th { "Name" } th { "Error" } th { "Queues" }
                    th { "Newest" } th { "Oldest" }
                } }
                tbody {
                    @for g in &groups {
                        tr data-group=(g.key) {
                            td.n.count { a href={ "groups/" (g.key) } { (g.jobs.len()) } }
                            td { (g.name) }
                            td.error { a href={ "groups/" (g.key) } { (g.masked) } }
                            td { (g.queues.join(", ")) }
                            td { (time(g.newest)) }
                            td { (time(g.oldest)) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(
        &place,
        &viewer,
        false,
        "Failed jobs by error",
        driver(&dash),
        body,
    )
    .into_response())
}

/// The group `key`, or 404.
async fn find(dash: &Dashboard, key: &str) -> Result<(FailedGroup, bool)> {
    let (groups, more) = groups(dash).await?;
    groups
        .into_iter()
        .find(|g| g.key == key)
        .map(|g| (g, more))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "No failed job has the error fingerprint {key} (any more)."
            ))
        })
}

/// `GET failed/groups/{key}`: one group, with what Retry all and Delete all would touch
/// (the dry run) and their buttons.
pub(crate) async fn group(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(key): Path<String>,
) -> Result<Response> {
    let (g, more) = find(&dash, &key).await?;
    let body = html! {
        p.crumbs { a href="../../failed" { "Failed jobs" } " / " a href="../groups" { "by error" } " / " (key) }
        h1 { "Failed jobs with one error" }
        dl.fields {
            dt { "Name" } dd { (g.name) }
            dt { "Error" } dd.error { (g.masked) }
            dt { "Queues" } dd { (g.queues.join(", ")) }
            dt { "Jobs" } dd.count { (g.jobs.len()) @if more { " among the newest " (SCAN) } }
            dt { "Newest" } dd { (time(g.newest)) }
            dt { "Oldest" } dd { (time(g.oldest)) }
        }
        @if viewer.can_act() {
            @let before = millis(g.newest);
            p.dry-run {
                "Retry all puts these " (g.jobs.len()) " failed jobs back on their queues "
                "(batch members counted pending in their batches again); Delete all "
                "deletes them. Either runs in the background, with a page of its "
                "progress. Jobs that failed with this error after the newest one "
                "shown here are left alone."
            }
            form.inline method="post" action={ (key) "/retry" } {
                (csrf_input(&viewer))
                input type="hidden" name="before" value=(before);
                button.retry type="submit" { "Retry all " (g.jobs.len()) }
            }
            " "
            form.inline method="post" action={ (key) "/forget" } {
                (csrf_input(&viewer))
                input type="hidden" name="before" value=(before);
                button.forget type="submit" { "Delete all " (g.jobs.len()) }
            }
        }
        h2 { "Jobs" }
        ul.ids {
            @for (id, _) in g.jobs.iter().take(50) {
                li { a href={ "../" (enc(id)) } { (id) } }
            }
            @if g.jobs.len() > 50 { li { "… and " (g.jobs.len() - 50) " more" } }
        }
    };
    Ok(layout(
        &place,
        &viewer,
        false,
        "Failed jobs with one error",
        driver(&dash),
        body,
    )
    .into_response())
}

/// A time as milliseconds since the Unix epoch (0 before it).
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActForm {
    /// The newest failure time the page showed, in milliseconds since the Unix epoch.
    before: u64,
}

/// `POST failed/groups/{key}/retry` and `/forget`: every failed job with the group's
/// fingerprint that failed no later than the newest one the page showed.
pub(crate) async fn act(
    State(dash): State<Dashboard>,
    Path((key, action)): Path<(String, String)>,
    form: Result<Form<ActForm>, FormRejection>,
) -> Result<Response> {
    if action != "retry" && action != "forget" {
        return Err(Error::NotFound("No such page in the dashboard.".into()));
    }
    let Ok(Form(form)) = form else {
        return Err(Error::Refused(
            "the form lacks `before`: reload the group's page and try again".into(),
        ));
    };
    let (group, _) = find(&dash, &key).await?;
    let retry = action == "retry";
    let ids: Vec<String> = group
        .jobs
        .iter()
        .filter(|(_, failed_at)| millis(*failed_at) <= form.before)
        .map(|(id, _)| id.clone())
        .collect();
    let what = format!(
        "{} the failed jobs of {} with the error \"{}\"",
        if retry { "retry" } else { "delete" },
        group.name,
        group.masked
    );
    let task = start_on_failed(&dash, what, ids, retry);
    // From `failed/groups/{key}/{action}`: `../../../tasks/{id}` is the task's page.
    Ok(see_other(format!("../../../tasks/{task}")))
}

#[cfg(test)]
mod tests {
    use super::{key, mask};

    #[test]
    fn numbers_and_ids_are_masked() {
        assert_eq!(mask("order 1234 not found"), "order N not found");
        assert_eq!(mask("order 98 not found"), "order N not found");
        assert_eq!(
            mask("user 3f2a9c1e-77aa-4bcd-9e01-5d2b8f00aa11 is gone\nat line 3"),
            "user X is gone"
        );
        assert_eq!(
            mask("timeout after 30s (try 2/5)"),
            "timeout after Ns (try N/N)"
        );
        assert_eq!(mask("no digits here"), "no digits here");
        assert_eq!(key("a", "b"), key("a", "b"));
        assert_ne!(key("a", "b"), key("c", "b"));
        assert_eq!(key("a", "b").len(), 16);
    }
}
