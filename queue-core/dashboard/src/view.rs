//! What every page shares: the layout, links relative to the mount point, times, notices.

use std::convert::Infallible;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use maud::{html, Markup, DOCTYPE};

use crate::auth::Viewer;

/// Where a request is under the mount point, for relative links that work under any prefix
/// and however it is mounted (`Router::nest` serves the overview at `/admin/jobs` only,
/// `nest_service` at `/admin/jobs/` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    /// From the page to the mount directory (`/admin/jobs/`): `./`, `../`, or `jobs/` for
    /// the overview served at `/admin/jobs`.
    pub(crate) root: String,
    /// From the page to the overview, which is the mount path itself (`/admin/jobs`).
    pub(crate) home: String,
}

impl Place {
    /// `original`: the path the client asked for; `inner`: the router's own part of it.
    pub(crate) fn new(original: &str, inner: &str) -> Place {
        let prefix = if inner == "/" {
            original.trim_end_matches('/')
        } else {
            original.strip_suffix(inner).unwrap_or("")
        };
        let last = prefix.rsplit('/').next().unwrap_or_default();
        if inner == "/" && !original.ends_with('/') {
            return Place {
                root: format!("{last}/"),
                home: last.to_owned(),
            };
        }
        let depth = inner.matches('/').count().saturating_sub(1);
        let root = if depth == 0 {
            "./".to_owned()
        } else {
            "../".repeat(depth)
        };
        let home = match last {
            "" => root.clone(),
            last if depth == 0 => format!("../{last}"),
            last => format!("{root}../{last}"),
        };
        Place { root, home }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Place {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let inner = parts.uri.path();
        let original = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| o.0.path())
            .unwrap_or(inner);
        Ok(Place::new(original, inner))
    }
}

/// `text` as one path segment or query value: every byte but the unreserved ones
/// percent-encoded (a queue named `a/b` or `x?y` stays one segment).
pub(crate) fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A page: every link and asset is relative to the page's URL (see [`Place`]), so that it
/// works under any prefix. With `base`, the page says so (`<base href>`), and its own links
/// are written relative to the mount directory: what the overview does, whose live table is
/// one rendering for every listener. A viewer with full access finds its CSRF token in the
/// `csrf-token` meta tag (besides every form); a read-only one sees "read-only".
pub(crate) fn layout(
    place: &Place,
    viewer: &Viewer,
    base: bool,
    title: &str,
    driver: &str,
    body: Markup,
) -> Markup {
    let (root, home) = if base {
        // Relative to the base, the mount directory.
        let home = if place.root == "./" {
            place.home.clone()
        } else {
            // The overview served as `/admin/jobs`: its base is `jobs/`.
            format!("../{}", place.home)
        };
        (String::new(), home)
    } else {
        (place.root.clone(), place.home.clone())
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if base { base href=(place.root); }
                @if viewer.can_act() { meta name="csrf-token" content=(viewer.csrf()); }
                title { (title) " · runall" }
                link rel="stylesheet" href={ (root) "assets/dashboard.css" };
                script src={ (root) "assets/dashboard.js" } defer {}
            }
            body {
                header {
                    nav {
                        a.brand href=(home) { "runall" }
                        a href=(home) { "Queues" }
                        a href={ (root) "failed" } { "Failed" }
                        a href={ (root) "workers" } { "Workers" }
                        a href={ (root) "batches" } { "Batches" }
                        a href={ (root) "schedules" } { "Schedules" }
                        a href={ (root) "locks" } { "Locks" }
                        a href={ (root) "audit" } { "Audit" }
                        form.find method="get" action={ (root) "jobs" } {
                            label { "Job id " input type="text" name="id" size="12" required; }
                            button type="submit" { "Show" }
                        }
                    }
                    span.driver {
                        "store: " (driver)
                        @if !viewer.can_act() { " · " strong.read-only { "read-only" } }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A time as RFC 3339 to the second, and how long ago or ahead it is.
pub(crate) fn time(t: SystemTime) -> Markup {
    let stamp = humantime::format_rfc3339_seconds(t).to_string();
    let now = SystemTime::now();
    let relative = match t.duration_since(now) {
        Ok(ahead) => format!("in {}", rough(ahead.as_secs())),
        Err(e) => format!("{} ago", rough(e.duration().as_secs())),
    };
    html! { time datetime=(stamp) title=(stamp) { (stamp.replace('T', " ")) " (" (relative) ")" } }
}

fn rough(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// The plain sentence shown where the store lacks a capability.
pub(crate) fn unsupported(error: &queue_core::Error) -> Markup {
    html! { p.unsupported { "Not available on this store: " (error.to_string()) "." } }
}

/// The line of a text cut to `max` characters, control characters as spaces.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// What an action did, carried to the page it redirects to as `?notice=`: a fixed set of
/// words, so no text from the request is ever shown back.
pub(crate) fn notice(word: Option<&str>) -> Option<Markup> {
    let text = match word? {
        "paused" => "Queue paused: workers take none of its jobs until it is resumed (jobs already running finish).",
        "already-paused" => "The queue was paused already.",
        "resumed" => "Queue resumed.",
        "not-paused" => "The queue was not paused.",
        "cancelled" => "Job cancelled: it was removed from its queue and will never run.",
        "cancel-requested" => "Cancel requested: the worker running the job stops it within a heartbeat.",
        "finished" => "The job had ended already: nothing was changed.",
        "retried" => "The failed job is back on its queue as this job.",
        "held" => "The failed job stays: another job holds its unique key.",
        "forgotten" => "Failed job deleted.",
        "batch-cancelled" => "Batch cancelled: its members not started yet will never run and are counted cancelled; running ones see it.",
        "batch-retried" => "The batch's failed members are back on their queues, counted pending again.",
        "batch-nothing-to-retry" => "No failed member of the batch is left in the failed store: nothing was retried.",
        "schedule-paused" => "Schedule paused: its ticks pass unclaimed on every worker until it is resumed.",
        "schedule-resumed" => "Schedule resumed.",
        "schedule-run" => "One run of the schedule was pushed now (not counted in its ticks).",
        "schedule-held" => "No run was pushed: the schedule's overlap policy held it back (a run is queued or running).",
        "lock-released" => "Lock released: another job of its key may start now. If its holder still runs, it no longer holds the lock.",
        "lock-not-held" => "No one held that lock (it expired, or was released already): nothing was changed.",
        _ => return None,
    };
    Some(html! { p.notice role="status" { (text) } })
}

#[cfg(test)]
mod tests {
    use super::Place;

    fn place(original: &str, inner: &str) -> (String, String) {
        let p = Place::new(original, inner);
        (p.root, p.home)
    }

    #[test]
    fn links_lead_back_to_the_mount_point() {
        let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        // At the root of a server.
        assert_eq!(place("/", "/"), s("./", "./"));
        assert_eq!(place("/failed", "/failed"), s("./", "./"));
        assert_eq!(place("/queues/a", "/queues/a"), s("../", "../"));
        // `nest("/admin/jobs", ..)`: the overview is `/admin/jobs`.
        assert_eq!(place("/admin/jobs", "/"), s("jobs/", "jobs"));
        assert_eq!(place("/admin/jobs/failed", "/failed"), s("./", "../jobs"));
        assert_eq!(
            place("/admin/jobs/queues/a", "/queues/a"),
            s("../", "../../jobs")
        );
        assert_eq!(
            place("/admin/jobs/queues/a/pause", "/queues/a/pause"),
            s("../../", "../../../jobs")
        );
        // `nest_service`: `/admin/jobs/` too.
        assert_eq!(place("/admin/jobs/", "/"), s("./", "../jobs"));
    }
}
