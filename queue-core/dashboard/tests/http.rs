//! The dashboard over HTTP, through the router itself (`tower::ServiceExt::oneshot`), on a
//! SQLite file and on Redis (required in CI), and memcached for what it cannot do.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use common::{
    cell, csrf_of, dispatch, dispatch_later, enc, failed, get, post, post_as, reserve, send,
    session, urls,
};
use futures::StreamExt;
use queue_core::{JobState, StorageExt};

#[tokio::test]
async fn the_overview_counts_each_queue() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        for n in 0..3 {
            dispatch(&queue, "mail", n).await;
        }
        dispatch_later(&queue, "mail").await;
        dispatch_later(&queue, "mail").await;
        dispatch(&queue, "reports", 9).await;
        let _lease = reserve(&queue, "reports").await;
        failed(&queue, "doomed", 1).await;
        let app = queue_dashboard::router(queue.clone());
        let page = get(&app, "/").await;
        assert_eq!(page.status, StatusCode::OK, "{name}: {}", page.body);
        assert_eq!(
            cell(&page.body, "mail", "waiting").as_deref(),
            Some("3"),
            "{name}"
        );
        assert_eq!(
            cell(&page.body, "mail", "delayed").as_deref(),
            Some("2"),
            "{name}"
        );
        assert_eq!(
            cell(&page.body, "mail", "running").as_deref(),
            Some("0"),
            "{name}"
        );
        // SQL counts no reserved rows (it would walk the queue): its pages count what the
        // worker registry says runs, and the job reserved here has no worker.
        let running = if name == "sqlite" { "0" } else { "1" };
        assert_eq!(
            cell(&page.body, "reports", "running").as_deref(),
            Some(running),
            "{name}"
        );
        assert_eq!(
            cell(&page.body, "reports", "waiting").as_deref(),
            Some("0"),
            "{name}"
        );
        assert!(
            page.body.contains("failed-count\">1<"),
            "{name}: {}",
            page.body
        );
        assert!(page.body.contains(&format!("store: {name}")), "{name}");
        // The queue page shows the same counts on its tabs, and the running job.
        let page = get(&app, "/queues/reports?state=running").await;
        assert_eq!(page.status, StatusCode::OK, "{name}");
        assert!(
            page.body.contains(&format!("running ({running})")),
            "{name}: {}",
            page.body
        );
        assert!(page.body.contains("href=\"../jobs/"), "{name}");
        let page = get(&app, "/queues/mail?state=delayed").await;
        assert!(page.body.contains("delayed (2)"), "{name}");
        assert_eq!(page.body.matches("href=\"../jobs/").count(), 2, "{name}");
        let page = get(&app, "/queues/mail?state=bogus").await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{name}");
    }
}

#[tokio::test]
async fn queue_pages_follow_the_cursor() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let mut dispatched = Vec::new();
        for n in 0..7 {
            dispatched.push(dispatch(&queue, "bulk", n).await.0);
        }
        let app = queue_dashboard::router(queue.clone());
        let mut uri = "/queues/bulk?state=waiting&limit=3".to_owned();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = get(&app, &uri).await;
            assert_eq!(page.status, StatusCode::OK, "{name}: {uri}");
            pages += 1;
            let ids: Vec<String> = urls(&page.body)
                .into_iter()
                .filter_map(|u| u.strip_prefix("../jobs/").map(str::to_owned))
                .collect();
            assert!(ids.len() <= 3, "{name}: {ids:?}");
            seen.extend(ids);
            let next = urls(&page.body)
                .into_iter()
                .find(|u| u.contains("after="))
                .filter(|_| page.body.contains("rel=\"next\""));
            match next {
                // Relative to `queues/`: `bulk?state=…`.
                Some(next) => uri = format!("/queues/{}", next.replace("&amp;", "&")),
                None => break,
            }
            assert!(pages < 10, "{name}: the cursor does not end");
        }
        assert_eq!(pages, 3, "{name}");
        let dispatched: Vec<String> = dispatched.iter().map(|id| enc(id)).collect();
        assert_eq!(seen, dispatched, "{name}: every job once, first due first");
    }
}

/// A queue page searches one state by name and payload text (any case), looks at 10,000
/// jobs at most per page, and its next page goes on with the same search.
#[tokio::test]
async fn queue_pages_search_by_name_and_payload() {
    let (stores, _dir) = common::stores().await;
    let mut first = true;
    for (name, queue) in stores {
        let q = format!("sought-{name}");
        for n in 0..7 {
            dispatch(&queue, &q, n).await;
        }
        let mut invoices = Vec::new();
        for to in [
            "Ann@example.com",
            "ann@example.com",
            "bob@example.com",
            "ANN@example.com",
        ] {
            let id = queue
                .dispatch_named("invoice-mail", serde_json::json!({ "to": to }))
                .on_queue(&q)
                .await
                .unwrap()
                .into_id();
            invoices.push(enc(&id.0));
        }
        let app = queue_dashboard::router(queue.clone());
        let ids = |body: &str| -> Vec<String> {
            urls(body)
                .into_iter()
                .filter_map(|u| u.strip_prefix("../jobs/").map(str::to_owned))
                .collect()
        };
        let page = get(&app, &format!("/queues/{q}?state=waiting&name=INVOICE")).await;
        assert_eq!(page.status, StatusCode::OK, "{name}");
        assert_eq!(
            ids(&page.body),
            invoices,
            "{name}: every invoice job, in order"
        );
        assert!(
            page.body
                .contains("4 matching among 11 waiting jobs looked at"),
            "{name}: {}",
            page.body
        );
        let page = get(
            &app,
            &format!("/queues/{q}?state=waiting&name=invoice&text=ann%40example"),
        )
        .await;
        let ann: Vec<String> = [0, 1, 3].iter().map(|&i| invoices[i].clone()).collect();
        assert_eq!(ids(&page.body), ann, "{name}: the payload text, any case");
        let page = get(&app, &format!("/queues/{q}?state=waiting&text=nobody")).await;
        assert!(ids(&page.body).is_empty(), "{name}");
        assert!(
            page.body.contains("No waiting job matches."),
            "{name}: {}",
            page.body
        );
        let page = get(&app, &format!("/queues/{q}?state=delayed&name=invoice")).await;
        assert!(ids(&page.body).is_empty(), "{name}: one state at a time");

        if !first {
            continue;
        }
        first = false;
        // Past the 10,000 a page looks at: the next page goes on with the search.
        let big = format!("haystack-{name}");
        let filler = (0..10_050).map(|n| {
            queue
                .dispatch_named("dash-test", serde_json::json!({ "n": n }))
                .on_queue(&big)
        });
        queue.dispatch_many(filler).await.unwrap();
        let needle = queue
            .dispatch_named("needle", serde_json::json!({}))
            .on_queue(&big)
            .await
            .unwrap()
            .into_id();
        let page = get(&app, &format!("/queues/{big}?state=waiting&name=needle")).await;
        assert!(ids(&page.body).is_empty(), "{name}");
        assert!(
            page.body
                .contains("0 matching among 10000 waiting jobs looked at"),
            "{name}: {}",
            page.body
        );
        let next = urls(&page.body)
            .into_iter()
            .find(|u| u.contains("after="))
            .filter(|_| page.body.contains("rel=\"next\""))
            .expect("a next page");
        assert!(next.contains("name=needle"), "{name}: {next}");
        let page = get(&app, &format!("/queues/{}", next.replace("&amp;", "&"))).await;
        assert_eq!(ids(&page.body), [enc(&needle.0)], "{name}: {}", page.body);
    }
}

/// The locks page lists the locks held with their owners and releases one by force; the
/// release-by-key form works on memcached, which cannot list them.
#[tokio::test]
async fn locks_are_listed_and_released() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let key = format!("report:<{name}>");
        let storage = queue.storage();
        assert!(storage
            .lock(&key, "lease-token-1", Duration::from_secs(60))
            .await
            .unwrap());
        let app = queue_dashboard::router(queue.clone());
        let page = get(&app, "/locks").await;
        assert_eq!(page.status, StatusCode::OK, "{name}: {}", page.body);
        assert!(
            page.body
                .contains(&format!("<td>report:&lt;{name}&gt;</td>")),
            "{name}: {}",
            page.body
        );
        assert!(page.body.contains("lease-token-1"), "{name}");
        assert!(page.body.contains("action=\"locks/release\""), "{name}");
        let released = post(&app, "/locks/release", &format!("key={}", enc(&key))).await;
        assert_eq!(
            released.status,
            StatusCode::SEE_OTHER,
            "{name}: {}",
            released.body
        );
        let to = released.headers.get("location").unwrap().to_str().unwrap();
        assert_eq!(to, "../locks?notice=lock-released", "{name}");
        assert!(
            !storage.unlock(&key, "lease-token-1").await.unwrap(),
            "{name}: its holder no longer holds it"
        );
        assert!(storage
            .lock(&key, "lease-token-2", Duration::from_secs(60))
            .await
            .unwrap());
        let again = post(&app, "/locks/release", &format!("key={}", enc(&key))).await;
        assert_eq!(again.status, StatusCode::SEE_OTHER);
        let nothing = post(&app, "/locks/release", "key=no-such-lock").await;
        let to = nothing.headers.get("location").unwrap().to_str().unwrap();
        assert_eq!(to, "../locks?notice=lock-not-held", "{name}");
        let page = get(&app, "/locks").await;
        assert!(!page.body.contains("lease-token"), "{name}: {}", page.body);
        // Read-only: listed, no button, and a release refused.
        let read_only =
            queue_dashboard::router_with(queue.clone(), queue_dashboard::Access::ReadOnly);
        assert!(storage
            .lock(&key, "lease-token-3", Duration::from_secs(60))
            .await
            .unwrap());
        let page = get(&read_only, "/locks").await;
        assert!(page.body.contains("lease-token-3"), "{name}");
        assert!(!page.body.contains("locks/release"), "{name}");
        let refused = post(&read_only, "/locks/release", &format!("key={}", enc(&key))).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{name}");
        assert!(storage.unlock(&key, "lease-token-3").await.unwrap());
    }
    let Some(queue) = common::memcached().await else {
        return;
    };
    let storage = queue.storage();
    assert!(storage
        .lock("memo", "lease-token-m", Duration::from_secs(60))
        .await
        .unwrap());
    let app = queue_dashboard::router(queue.clone());
    let page = get(&app, "/locks").await;
    assert!(
        page.body
            .contains("the memcached driver does not support listing locks"),
        "{}",
        page.body
    );
    assert!(page.body.contains("action=\"locks/release\""));
    let released = post(&app, "/locks/release", "key=memo").await;
    let to = released.headers.get("location").unwrap().to_str().unwrap();
    assert_eq!(to, "../locks?notice=lock-released");
    assert!(!storage.unlock("memo", "lease-token-m").await.unwrap());
}

#[tokio::test]
async fn a_job_page_cancels_the_job() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let id = dispatch(&queue, "mail", 1).await;
        let app = queue_dashboard::router(queue.clone());
        let id_path = enc(&id.0);
        let page = get(&app, &format!("/jobs/{id_path}")).await;
        assert_eq!(page.status, StatusCode::OK, "{name}");
        assert!(
            page.body.contains("job-state\">pending"),
            "{name}: {}",
            page.body
        );
        assert!(
            page.body.contains(&format!("action=\"{id_path}/cancel\"")),
            "{name}"
        );
        let done = post(&app, &format!("/jobs/{id_path}/cancel"), "").await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{name}: {}", done.body);
        assert_eq!(
            done.location.as_deref(),
            Some(format!("../{id_path}?notice=cancelled").as_str())
        );
        let status = queue.job(&id).await.expect("status").expect("known");
        assert_eq!(status.state, JobState::Cancelled, "{name}");
        let page = get(&app, &format!("/jobs/{id_path}?notice=cancelled")).await;
        assert!(page.body.contains("job-state\">cancelled"), "{name}");
        assert!(page.body.contains("Job cancelled"), "{name}");
        assert!(
            !page.body.contains("Cancel job"),
            "{name}: no button once ended"
        );
        // The look-up form, and unknown ids.
        let found = get(&app, &format!("/jobs?id={id_path}")).await;
        assert_eq!(
            found.location.as_deref(),
            Some(format!("jobs/{id_path}").as_str())
        );
        let missing = get(&app, "/jobs/999999999").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{name}");
        assert!(missing.body.contains("No job with id 999999999"), "{name}");
    }
}

#[tokio::test]
async fn failed_jobs_are_shown_retried_and_forgotten() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        failed(&queue, "doomed", 1).await;
        failed(&queue, "doomed", 2).await;
        let store = queue.storage().failed_store().expect("a failed store");
        let ids: Vec<String> = store
            .list(queue_core::storage::PageRequest::first(10))
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(ids.len(), 2, "{name}");
        let app = queue_dashboard::router(queue.clone());
        let list = get(&app, "/failed").await;
        assert_eq!(list.status, StatusCode::OK, "{name}");
        assert!(list.body.contains("2 in the failed store"), "{name}");
        for id in &ids {
            assert!(
                list.body.contains(&format!("href=\"failed/{}\"", enc(id))),
                "{name}"
            );
        }
        // Error and payload as text, escaped.
        assert!(list.body.contains("boom 1 &lt;script&gt;"), "{name}");
        let one = get(&app, &format!("/failed/{}", enc(&ids[0]))).await;
        assert_eq!(one.status, StatusCode::OK, "{name}");
        assert!(
            one.body.contains("&lt;b&gt;x&lt;/b&gt;"),
            "{name}: {}",
            one.body
        );
        assert!(!one.body.contains("<b>x</b>"), "{name}");
        assert!(one.body.contains("dash-test"), "{name}");

        let retried = post(&app, &format!("/failed/{}/retry", enc(&ids[0])), "").await;
        assert_eq!(
            retried.status,
            StatusCode::SEE_OTHER,
            "{name}: {}",
            retried.body
        );
        let location = retried.location.expect("a redirect");
        let new_id = location
            .strip_prefix("../../jobs/")
            .and_then(|l| l.strip_suffix("?notice=retried"))
            .expect("to the new job's page")
            .to_owned();
        let size = queue
            .storage()
            .inspect()
            .expect("inspect")
            .size("doomed")
            .await;
        assert_eq!(size.expect("size").waiting, 1, "{name}: back on its queue");
        let page = get(&app, &format!("/jobs/{new_id}?notice=retried")).await;
        assert_eq!(page.status, StatusCode::OK, "{name}");
        assert!(page.body.contains("back on its queue"), "{name}");

        let forgot = post(&app, &format!("/failed/{}/forget", enc(&ids[1])), "").await;
        assert_eq!(forgot.status, StatusCode::SEE_OTHER, "{name}");
        assert_eq!(
            forgot.location.as_deref(),
            Some("../../failed?notice=forgotten")
        );
        assert_eq!(store.count().await.expect("count"), 0, "{name}");
        let list = get(&app, "/failed?notice=forgotten").await;
        assert!(list.body.contains("0 in the failed store"), "{name}");
        assert!(list.body.contains("Failed job deleted"), "{name}");
        let again = post(&app, &format!("/failed/{}/forget", enc(&ids[1])), "").await;
        assert_eq!(again.status, StatusCode::NOT_FOUND, "{name}");
    }
}

#[tokio::test]
async fn queues_pause_and_resume() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        dispatch(&queue, "mail", 1).await;
        let app = queue_dashboard::router(queue.clone());
        let page = get(&app, "/").await;
        assert!(page.body.contains("action=\"queues/mail/pause\""), "{name}");
        let done = post(&app, "/queues/mail/pause", "back=overview").await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{name}: {}", done.body);
        assert_eq!(done.location.as_deref(), Some("../../?notice=paused"));
        assert_eq!(queue.paused().await.expect("paused"), ["mail"], "{name}");
        let page = get(&app, "/?notice=paused").await;
        assert_eq!(
            cell(&page.body, "mail", "state").as_deref(),
            Some(""),
            "{name}"
        );
        assert!(
            page.body
                .contains("<strong class=\"paused\">paused</strong>"),
            "{name}"
        );
        assert!(
            page.body.contains("action=\"queues/mail/resume\""),
            "{name}"
        );
        assert!(page.body.contains("Queue paused"), "{name}");
        // From the queue's page, back to it.
        let queue_page = get(&app, "/queues/mail").await;
        assert!(
            queue_page.body.contains("action=\"../queues/mail/resume\""),
            "{name}"
        );
        let done = post(&app, "/queues/mail/resume", "back=queue").await;
        assert_eq!(done.location.as_deref(), Some("../mail?notice=resumed"));
        assert!(queue.paused().await.expect("paused").is_empty(), "{name}");
        let again = post(&app, "/queues/mail/resume", "back=queue").await;
        assert_eq!(again.location.as_deref(), Some("../mail?notice=not-paused"));
    }
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let (queue, _dir) = common::sqlite().await;
    let id = dispatch(&queue, "mail", 1).await;
    let app = queue_dashboard::router(queue.clone());
    for (header, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "http://evil.test"),
        ("origin", "null"),
    ] {
        for uri in [
            "/queues/mail/pause".to_owned(),
            format!("/jobs/{}/cancel", enc(&id.0)),
        ] {
            let request = Request::post(uri.as_str())
                .header("host", "dash.test")
                .header(header, value)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("back=overview"))
                .expect("a request");
            let reply = send(&app, request).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{header}: {value} {uri}"
            );
        }
    }
    assert!(queue.paused().await.expect("paused").is_empty());
    let status = queue.job(&id).await.expect("status").expect("known");
    assert_eq!(status.state, JobState::Pending);
    // A same-origin browser, and a client that is no browser at all (no such headers, a
    // bearer token rather than a cookie, so no CSRF token either).
    assert_eq!(
        post(&app, "/queues/mail/pause", "").await.status,
        StatusCode::SEE_OTHER
    );
    let plain = Request::post("/queues/mail/resume")
        .header("authorization", "Bearer anything")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(send(&app, plain).await.status, StatusCode::SEE_OTHER);
    // GETs are never refused.
    let cross_get = Request::get("/")
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(send(&app, cross_get).await.status, StatusCode::OK);
}

/// Every action needs the CSRF token of the browser's session: none, a wrong one, another
/// session's, or one without its session cookie are refused with 403 and change nothing.
#[tokio::test]
async fn actions_need_the_sessions_csrf_token() {
    let (queue, _dir) = common::sqlite().await;
    dispatch(&queue, "mail", 1).await;
    let app = queue_dashboard::router(queue.clone());
    let (cookie, csrf) = session(&app, "/").await;
    let (other_cookie, other_csrf) = session(&app, "/").await;
    assert_eq!(csrf.len(), 64, "{csrf}");
    assert_ne!(csrf, other_csrf, "each session has its own token");
    let page = get(&app, "/").await;
    assert!(
        page.body.contains("name=\"csrf\" value=\""),
        "the pause form carries a token: {}",
        page.body
    );
    for (form, cookie) in [
        ("back=overview".to_owned(), Some(cookie.as_str())),
        ("back=overview&csrf=0000".to_owned(), Some(cookie.as_str())),
        (format!("csrf={other_csrf}"), Some(cookie.as_str())),
        (format!("csrf={csrf}"), Some(other_cookie.as_str())),
        (format!("csrf={csrf}"), None),
    ] {
        let reply = post_as(&app, "/queues/mail/pause", &form, cookie).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{form} {cookie:?}");
        assert!(reply.body.contains("CSRF"), "{}", reply.body);
    }
    assert!(queue.paused().await.expect("paused").is_empty());
    let done = post_as(
        &app,
        "/queues/mail/pause",
        &format!("back=overview&csrf={csrf}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(queue.paused().await.expect("paused"), ["mail"]);
    // The live table gives each listener its own session's token.
    let events = Request::get("/events")
        .header("cookie", &cookie)
        .body(Body::empty())
        .expect("a request");
    let response = tower::ServiceExt::oneshot(app.clone(), events)
        .await
        .expect("the router answers");
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    while !text.contains("</form>") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream stays open")
            .expect("a chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains(&format!("value=\"{csrf}\"")), "{text}");
    assert!(!text.contains("__runall_csrf__"), "{text}");
}

/// Read-only access: every page, no button, no token in the page, every action refused;
/// what `runall serve` gives without a token, a read-only token, or an application's layer.
#[tokio::test]
async fn read_only_access_shows_pages_and_refuses_actions() {
    let (queue, _dir) = common::sqlite().await;
    failed(&queue, "mail", 9).await;
    let id = dispatch(&queue, "mail", 1).await;
    let store = queue.storage().failed_store().expect("a failed store");
    let failed_id = store
        .list(queue_core::storage::PageRequest {
            after: None,
            limit: 1,
        })
        .await
        .expect("list")
        .items
        .pop()
        .expect("one failed job")
        .id;
    let serve = queue_dashboard::ServeOptions::default()
        .app(queue.clone())
        .expect("loopback without a token");
    let tokens = queue_dashboard::Tokens {
        full: Some("full".into()),
        read_only: Some("look".into()),
    };
    let tokened = queue_dashboard::require_tokens(queue_dashboard::router(queue.clone()), &tokens)
        .expect("tokens");
    let layered = queue_dashboard::router(queue.clone()).layer(axum::middleware::from_fn(
        |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
            request
                .extensions_mut()
                .insert(queue_dashboard::Access::ReadOnly);
            next.run(request).await
        },
    ));
    let as_look = |method: &str, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", "Bearer look")
            .body(Body::empty())
            .expect("a request")
    };
    for (name, app, bearer) in [
        ("serve without a token", serve, false),
        ("read-only token", tokened.clone(), true),
        ("application layer", layered, false),
    ] {
        let pages = [
            "/".to_owned(),
            "/queues/mail".to_owned(),
            format!("/jobs/{}", enc(&id.0)),
            "/failed".to_owned(),
            format!("/failed/{}", enc(&failed_id)),
        ];
        for page in &pages {
            let reply = if bearer {
                send(&app, as_look("GET", page)).await
            } else {
                get(&app, page).await
            };
            assert_eq!(reply.status, StatusCode::OK, "{name} {page}");
            assert!(
                !reply.body.contains("method=\"post\""),
                "{name} {page}: {}",
                reply.body
            );
            assert!(csrf_of(&reply.body).is_none(), "{name} {page}");
            assert!(reply.body.contains("read-only"), "{name} {page}");
        }
        for action in [
            "/queues/mail/pause".to_owned(),
            format!("/jobs/{}/cancel", enc(&id.0)),
            format!("/failed/{}/forget", enc(&failed_id)),
        ] {
            let reply = if bearer {
                send(&app, as_look("POST", &action)).await
            } else {
                post(&app, &action, "").await
            };
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name} {action}");
            assert!(reply.body.contains("read-only"), "{}", reply.body);
        }
    }
    assert!(queue.paused().await.expect("paused").is_empty());
    let status = queue.job(&id).await.expect("status").expect("known");
    assert_eq!(status.state, JobState::Pending);
    assert!(store.get(&failed_id).await.expect("get").is_some());
    // The full token of the same router acts.
    let full = Request::post("/queues/mail/pause")
        .header("authorization", "Bearer full")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(send(&tokened, full).await.status, StatusCode::SEE_OTHER);
    assert_eq!(queue.paused().await.expect("paused"), ["mail"]);
}

#[tokio::test]
async fn it_works_under_a_prefix() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let id = dispatch(&queue, "mail", 1).await;
        failed(&queue, "doomed", 2).await;
        let app = Router::new().nest("/admin/jobs", queue_dashboard::router(queue.clone()));
        // axum's `nest` routes `/admin/jobs` (not `/admin/jobs/`): the overview says where
        // its links start with `<base href="jobs/">`.
        let overview = get(&app, "/admin/jobs").await;
        assert_eq!(overview.status, StatusCode::OK, "{name}");
        assert!(overview.body.contains("<base href=\"jobs/\">"), "{name}");
        assert!(overview.body.contains("href=\"queues/mail\""), "{name}");
        assert!(overview.body.contains("href=\"../jobs\">Queues"), "{name}");
        let failed_id = queue
            .storage()
            .failed_store()
            .expect("failed store")
            .list(queue_core::storage::PageRequest::first(1))
            .await
            .expect("list")
            .items[0]
            .id
            .clone();
        for uri in [
            "/admin/jobs".to_owned(),
            "/admin/jobs/queues/mail".to_owned(),
            format!("/admin/jobs/jobs/{}", enc(&id.0)),
            "/admin/jobs/failed".to_owned(),
            format!("/admin/jobs/failed/{}", enc(&failed_id)),
        ] {
            let page = get(&app, &uri).await;
            assert_eq!(page.status, StatusCode::OK, "{name}: {uri}: {}", page.body);
            for url in urls(&page.body) {
                assert!(!url.starts_with('/'), "{name}: {uri} links to {url}");
                assert!(!url.contains("://"), "{name}: {uri} links to {url}");
            }
        }
        for asset in ["dashboard.css", "dashboard.js"] {
            let page = get(&app, &format!("/admin/jobs/assets/{asset}")).await;
            assert_eq!(page.status, StatusCode::OK, "{asset}");
            assert!(page.body.len() > 500, "{asset}");
        }
        let page = get(&app, "/admin/jobs/queues/mail").await;
        assert!(page.body.contains("href=\"../../jobs\">Queues"), "{name}");
        let done = post(&app, "/admin/jobs/queues/mail/pause", "back=overview").await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{name}");
        assert_eq!(
            done.location.as_deref(),
            Some("../../../jobs?notice=paused")
        );
        assert_eq!(queue.paused().await.expect("paused"), ["mail"], "{name}");
        assert_eq!(
            get(&app, "/admin/jobs/nothing").await.status,
            StatusCode::NOT_FOUND
        );

        // Mounted with `nest_service`, `/admin/jobs/` is the overview too.
        let app = Router::new().nest_service("/admin/jobs", queue_dashboard::router(queue.clone()));
        let slash = get(&app, "/admin/jobs/").await;
        assert_eq!(slash.status, StatusCode::OK, "{name}");
        assert!(slash.body.contains("<base href=\"./\">"), "{name}");
        assert!(slash.body.contains("href=\"../jobs\">Queues"), "{name}");
        assert_eq!(
            get(&app, "/admin/jobs").await.status,
            StatusCode::OK,
            "{name}"
        );
    }
}

#[tokio::test]
async fn memcached_says_what_it_cannot_do() {
    let Some(queue) = common::memcached().await else {
        return;
    };
    dispatch(&queue, "mail", 1).await;
    dispatch(&queue, "mail", 2).await;
    let app = queue_dashboard::router(queue.clone());
    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(cell(&page.body, "mail", "waiting").as_deref(), Some("2"));
    assert!(
        page.body.contains(
            "Not available on this store: the memcached driver does not support group counters"
        ),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("/pause\""),
        "no pause button where pausing is not supported"
    );
    let list = get(&app, "/queues/mail").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(
        list.body.contains(
            "Not available on this store: the memcached driver does not support listing jobs"
        ),
        "{}",
        list.body
    );
    assert!(
        list.body.contains("waiting (2)"),
        "the counts are still shown"
    );
    assert!(!list.body.contains("<table"), "no empty table pretending");
    let paused = post(&app, "/queues/mail/pause", "").await;
    assert_eq!(paused.status, StatusCode::NOT_IMPLEMENTED);
    assert!(paused.body.contains("does not support"), "{}", paused.body);
}

/// Reads the next `overview` event of an SSE body: its id and data.
async fn next_event(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buffer: &mut String,
) -> (u64, String) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if !frame.contains("event: overview") {
                continue; // a keep-alive comment
            }
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|v| v.parse().ok())
                .expect("an id");
            let data: Vec<&str> = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            return (id, data.join("\n"));
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .expect("a chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn open_events(
    app: &Router,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin {
    let response = tower::ServiceExt::oneshot(
        app.clone(),
        Request::get("/events")
            .body(Body::empty())
            .expect("a request"),
    )
    .await
    .expect("the router answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    response.into_body().into_data_stream()
}

#[tokio::test]
async fn one_collector_feeds_every_listener_and_only_while_they_listen() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        dispatch(&queue, "mail", 1).await;
        let app = queue_dashboard::router(queue.clone());
        let (mut a, mut b) = (open_events(&app).await, open_events(&app).await);
        let (mut buf_a, mut buf_b) = (String::new(), String::new());
        let (first, html) = next_event(&mut a, &mut buf_a).await;
        assert_eq!(
            cell(&html, "mail", "waiting").as_deref(),
            Some("1"),
            "{name}: {html}"
        );
        // A job dispatched now shows up in a later event, without asking.
        dispatch(&queue, "mail", 2).await;
        let started = std::time::Instant::now();
        let mut last = first;
        loop {
            let (id, html) = next_event(&mut a, &mut buf_a).await;
            assert!(id >= last, "{name}: ids go up");
            last = id;
            if cell(&html, "mail", "waiting").as_deref() == Some("2") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{name}: no update"
            );
        }
        // Both listeners get the same reads: one collector, at most one read a second.
        let (id_b, _) = next_event(&mut b, &mut buf_b).await;
        assert!(id_b <= last + 1, "{name}: {id_b} vs {last}");
        let t0 = std::time::Instant::now();
        let (from, _) = next_event(&mut a, &mut buf_a).await;
        let mut to = from;
        while t0.elapsed() < Duration::from_millis(2500) {
            to = next_event(&mut a, &mut buf_a).await.0;
        }
        let secs = t0.elapsed().as_secs_f64();
        assert!(
            (to - from) as f64 <= secs + 1.0,
            "{name}: {} reads in {secs:.1} s",
            to - from
        );
        // Nobody listens: no read. The next listener continues the count where it stopped.
        drop(a);
        drop(b);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut c = open_events(&app).await;
        let mut buf_c = String::new();
        let mut ids = vec![next_event(&mut c, &mut buf_c).await.0];
        ids.push(next_event(&mut c, &mut buf_c).await.0);
        assert!(
            ids.iter().all(|id| *id <= to + 3),
            "{name}: the collector kept reading with nobody listening: {ids:?} after {to}"
        );
    }
}

#[tokio::test]
async fn a_token_guards_every_page() {
    let (queue, _dir) = common::sqlite().await;
    let app = queue_dashboard::require_token(queue_dashboard::router(queue.clone()), "s3 cret")
        .expect("a token");
    assert_eq!(get(&app, "/").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, "/events").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, "/metrics").await.status, StatusCode::UNAUTHORIZED);
    // `/healthz` alone answers without the token, and says nothing of the store.
    let health = get(&app, "/healthz").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok\n")
    );
    assert_eq!(
        get(&app, "/healthz/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/?token=wrong").await.status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = Request::get("/")
        .header("authorization", "Bearer s3 cret")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(send(&app, bearer).await.status, StatusCode::OK);
    let wrong = Request::get("/")
        .header("authorization", "Bearer s3")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(send(&app, wrong).await.status, StatusCode::UNAUTHORIZED);
    // `?token=` once: a cookie, and the same URL without the token.
    let opened = get(&app, "/failed?token=s3%20cret&after=").await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER);
    assert_eq!(opened.location.as_deref(), Some("/failed?after="));
    let cookie = opened
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let with_cookie = Request::get("/failed")
        .header("cookie", format!("other=1; {pair}"))
        .body(Body::empty())
        .expect("a request");
    assert_eq!(send(&app, with_cookie).await.status, StatusCode::OK);
    assert!(queue_dashboard::require_token(queue_dashboard::router(queue.clone()), "").is_err());

    // `runall serve`'s rule: beyond the loopback interface only with a token.
    let open = queue_dashboard::ServeOptions {
        bind: "0.0.0.0:8080".parse().expect("an address"),
        ..Default::default()
    };
    let refused = open.app(queue.clone()).expect_err("refused");
    assert!(refused.to_string().contains("without a token"), "{refused}");
    let guarded = queue_dashboard::ServeOptions {
        token: Some("t".into()),
        ..open
    };
    assert!(guarded.app(queue.clone()).is_ok());
    assert!(queue_dashboard::ServeOptions::default().app(queue).is_ok());
}

/// A batch member's page says which batch it is part of (SQLite and Redis, both with
/// batches).
#[tokio::test]
async fn a_job_page_names_its_batch() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let q = format!("grouped-{name}");
        let batch = queue_core::Batch::new()
            .add(
                queue
                    .dispatch_named("report", serde_json::json!({}))
                    .on_queue(q.as_str()),
            )
            .via(&queue)
            .dispatch()
            .await
            .expect("the batch");
        let listed = queue
            .storage()
            .inspect()
            .expect("a listing")
            .jobs(
                &q,
                queue_core::storage::JobState::Waiting,
                queue_core::storage::PageRequest::first(5),
            )
            .await
            .expect("its member");
        assert_eq!(listed.items.len(), 1, "{name}");
        let app = queue_dashboard::router(queue.clone());
        let page = get(&app, &format!("/jobs/{}", enc(&listed.items[0].id.0))).await;
        assert_eq!(page.status, StatusCode::OK, "{name}");
        assert!(
            page.body.contains(&format!(
                "<dd class=\"group\"><a href=\"../batches/{0}\">batch {0}</a></dd>",
                batch.0
            )),
            "{name}: {}",
            page.body
        );
    }
}

/// `GET /metrics`: the store's numbers as Prometheus gauges, read at the scrape; what a
/// store cannot say is named in a comment line, never shown as zero.
#[tokio::test]
async fn metrics_are_prometheus_gauges() {
    let (stores, _dir) = common::stores().await;
    let mut first = true;
    for (name, queue) in stores {
        for n in 0..3 {
            dispatch(&queue, "mail", n).await;
        }
        dispatch_later(&queue, "mail").await;
        dispatch_later(&queue, "mail").await;
        dispatch(&queue, "reports", 9).await;
        let _lease = reserve(&queue, "reports").await;
        failed(&queue, "doomed", 1).await;
        queue.pause("mail").await.unwrap();
        let app = queue_dashboard::router(queue.clone());
        let page = get(&app, "/metrics").await;
        assert_eq!(page.status, StatusCode::OK, "{name}: {}", page.body);
        for line in [
            "runall_queue_jobs{queue=\"mail\",state=\"waiting\"} 3",
            "runall_queue_jobs{queue=\"mail\",state=\"delayed\"} 2",
            "runall_queue_jobs{queue=\"mail\",state=\"running\"} 0",
            "runall_queue_jobs{queue=\"reports\",state=\"running\"} 1",
            "runall_queue_paused{queue=\"mail\"} 1",
            "runall_queue_paused{queue=\"reports\"} 0",
            "runall_failed_jobs 1",
            "# TYPE runall_queue_oldest_age_seconds gauge",
            "runall_queue_oldest_age_seconds{queue=\"mail\"} ",
        ] {
            assert!(page.body.contains(line), "{name}: {line} in\n{}", page.body);
        }
        assert!(
            !page.body.contains("not available"),
            "{name}: {}",
            page.body
        );
        // One reading answers the scrapes of the next 5 s: the store is not read again.
        dispatch(&queue, "mail", 7).await;
        let again = get(&app, "/metrics").await;
        assert_eq!(
            again.body, page.body,
            "{name}: a scrape within 5 s of the last reads nothing anew"
        );
        if first {
            first = false;
            tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
            let later = get(&app, "/metrics").await;
            assert!(
                later
                    .body
                    .contains("runall_queue_jobs{queue=\"mail\",state=\"waiting\"} 4"),
                "{name}: read again after 5 s\n{}",
                later.body
            );
        }
    }
    let Some(queue) = common::memcached().await else {
        return;
    };
    dispatch(&queue, "mail", 1).await;
    let app = queue_dashboard::router(queue.clone());
    let page = get(&app, "/metrics").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains("runall_queue_jobs{queue=\"mail\",state=\"waiting\"} 1"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("# not available: the memcached driver does not support"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("runall_queue_paused"), "{}", page.body);
}

/// The batches pages over SQLite and Redis: the list with each batch's counts, one batch
/// with its failed member, the member's retry counting it pending again, Retry and Cancel
/// from the batch's page; memcached says it keeps no batches.
#[tokio::test]
async fn batches_are_listed_shown_retried_and_cancelled() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let q = format!("batched-{name}");
        queue.listen("step", |n: u32, _ctx| async move {
            if n == 2 {
                Err(queue_core::JobError::fail("step 2 cannot work"))
            } else {
                Ok(())
            }
        });
        let batch = queue_core::Batch::new()
            .add_many((1..=3u32).map(|n| {
                queue
                    .dispatch_named("step", serde_json::json!(n))
                    .on_queue(q.as_str())
            }))
            .allow_failures()
            .via(&queue)
            .dispatch()
            .await
            .expect("the batch");
        queue
            .worker(
                queue_core::WorkerOptions::default()
                    .queues([q.as_str()])
                    .stop_when_empty(),
            )
            .run()
            .await
            .expect("the worker drains the batch");
        let app = queue_dashboard::router(queue.clone());
        let list = get(&app, "/batches").await;
        assert_eq!(list.status, StatusCode::OK, "{name}");
        assert!(
            list.body
                .contains(&format!("href=\"batches/{}\"", enc(&batch.0))),
            "{name}: {}",
            list.body
        );
        let path = format!("/batches/{}", enc(&batch.0));
        let page = get(&app, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{name}");
        for expected in [
            "<dd class=\"batch-state\">finished with failures</dd>",
            "<dd class=\"succeeded\">2</dd>",
            "<dd class=\"failed\">1</dd>",
            "<dd class=\"pending\">0</dd>",
            "step 2 cannot work",
            "Retry failed members",
        ] {
            assert!(
                page.body.contains(expected),
                "{name}: {expected} in {}",
                page.body
            );
        }
        assert!(!page.body.contains("Cancel batch"), "{name}: it has ended");
        // Retry the batch's failed members from its page: counted pending again.
        let retried = post(&app, &format!("{path}/retry"), "").await;
        assert_eq!(
            retried.status,
            StatusCode::SEE_OTHER,
            "{name}: {}",
            retried.body
        );
        assert_eq!(
            retried.location.as_deref(),
            Some(format!("../{}?notice=batch-retried", enc(&batch.0)).as_str())
        );
        let status = queue_core::Batch::status(&queue, &batch)
            .await
            .expect("the batch");
        assert_eq!((status.pending, status.failed), (1, 0), "{name}");
        // Cancel it while that member waits: it is counted cancelled and never runs.
        let page = get(&app, &path).await;
        assert!(page.body.contains("Cancel batch"), "{name}: {}", page.body);
        let cancelled = post(&app, &format!("{path}/cancel"), "").await;
        assert_eq!(cancelled.status, StatusCode::SEE_OTHER, "{name}");
        queue
            .worker(
                queue_core::WorkerOptions::default()
                    .queues([q.as_str()])
                    .stop_when_empty(),
            )
            .run()
            .await
            .expect("the worker drains the batch");
        let status = queue_core::Batch::status(&queue, &batch)
            .await
            .expect("the batch");
        assert_eq!(
            (status.pending, status.cancelled, status.is_cancelled),
            (0, 1, true),
            "{name}"
        );
        let page = get(&app, &path).await;
        assert!(
            page.body
                .contains("<dd class=\"batch-state\">cancelled</dd>"),
            "{name}: {}",
            page.body
        );
        assert_eq!(
            get(&app, "/batches/no-such-batch").await.status,
            StatusCode::NOT_FOUND
        );
    }
    if let Some(queue) = common::memcached().await {
        let app = queue_dashboard::router(queue);
        let page = get(&app, "/batches").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body.contains("Not available on this store"),
            "{}",
            page.body
        );
    }
}

/// A failed batch member is retried from the failed page as `runall failed retry` does:
/// back on its queue and counted pending in its batch again.
#[tokio::test]
async fn a_failed_batch_member_is_retried_with_its_batch() {
    let (queue, _dir) = common::sqlite().await;
    queue.listen("flaky", |_: u32, _ctx| async move {
        Err::<(), _>(queue_core::JobError::fail("no luck"))
    });
    let batch = queue_core::Batch::new()
        .add(
            queue
                .dispatch_named("flaky", serde_json::json!(1))
                .on_queue("m"),
        )
        .allow_failures()
        .via(&queue)
        .dispatch()
        .await
        .expect("the batch");
    queue
        .worker(
            queue_core::WorkerOptions::default()
                .queues(["m"])
                .stop_when_empty(),
        )
        .run()
        .await
        .expect("the worker");
    let failures = queue_core::Batch::failures(&queue, &batch)
        .await
        .expect("failures");
    assert_eq!(failures.len(), 1);
    let app = queue_dashboard::router(queue.clone());
    let page = get(&app, &format!("/failed/{}", enc(&failures[0].id))).await;
    assert!(
        page.body
            .contains(&format!("href=\"../batches/{}\"", enc(&batch.0))),
        "{}",
        page.body
    );
    let retried = post(&app, &format!("/failed/{}/retry", enc(&failures[0].id)), "").await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.body);
    let status = queue_core::Batch::status(&queue, &batch)
        .await
        .expect("the batch");
    assert_eq!((status.pending, status.failed), (1, 0));
}

/// The schedules page: a schedule in code with its state, paused, resumed and run now from
/// the page; a read-only viewer sees it without buttons.
#[tokio::test]
async fn schedules_are_shown_paused_resumed_and_run() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let app = queue_dashboard::router(queue.clone());
        let empty = get(&app, "/schedules").await;
        assert!(empty.body.contains("No schedule"), "{name}: {}", empty.body);
        queue
            .schedule(
                queue_core::Schedule::every(Duration::from_secs(3600))
                    .id("hourly-report")
                    .dispatch(
                        queue
                            .dispatch_named("report", serde_json::json!({}))
                            .on_queue("reports"),
                    ),
            )
            .expect("a schedule");
        let page = get(&app, "/schedules").await;
        assert_eq!(page.status, StatusCode::OK, "{name}");
        assert!(
            page.body.contains("data-schedule=\"hourly-report\""),
            "{name}: {}",
            page.body
        );
        assert!(
            page.body.contains("button type=\"submit\" class=\"pause\""),
            "{name}"
        );
        let paused = post(&app, "/schedules/hourly-report/pause", "").await;
        assert_eq!(
            paused.location.as_deref(),
            Some("../../schedules?notice=schedule-paused"),
            "{name}: {}",
            paused.body
        );
        assert!(
            queue
                .schedule_state("hourly-report")
                .await
                .expect("state")
                .paused
        );
        let resumed = post(&app, "/schedules/hourly-report/resume", "").await;
        assert_eq!(resumed.status, StatusCode::SEE_OTHER, "{name}");
        assert!(
            !queue
                .schedule_state("hourly-report")
                .await
                .expect("state")
                .paused
        );
        let run = post(&app, "/schedules/hourly-report/run", "").await;
        assert_eq!(
            run.location.as_deref(),
            Some("../../schedules?notice=schedule-run"),
            "{name}"
        );
        let size = queue
            .storage()
            .inspect()
            .expect("a listing")
            .size("reports")
            .await
            .expect("a size");
        assert_eq!(size.waiting, 1, "{name}: the run is queued");
        assert_eq!(
            post(&app, "/schedules/no-such/pause", "").await.status,
            StatusCode::NOT_FOUND,
            "{name}"
        );
        let read_only =
            queue_dashboard::router_with(queue.clone(), queue_dashboard::Access::ReadOnly);
        let page = get(&read_only, "/schedules").await;
        assert!(
            page.body.contains("data-schedule=\"hourly-report\""),
            "{name}"
        );
        assert!(!page.body.contains("method=\"post\""), "{name}");
    }
}

/// Failed jobs grouped by error fingerprint (numbers and ids masked), and a group retried
/// or deleted whole after its page showed the count; other groups are left alone.
#[tokio::test]
async fn failed_jobs_are_grouped_by_error_and_handled_per_group() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let q = format!("fp-{name}");
        let storage = queue.storage().clone();
        for (n, error) in [
            (1, "order 1234 not found"),
            (2, "order 98 not found"),
            (3, "order 7 not found"),
            (4, "timeout after 30s"),
        ] {
            dispatch(&queue, &q, n).await;
            let lease = reserve(&queue, &q).await;
            storage.fail(&lease, error).await.expect("failed");
        }
        let app = queue_dashboard::router(queue.clone());
        let list = get(&app, "/failed/groups").await;
        assert_eq!(list.status, StatusCode::OK, "{name}");
        assert!(
            list.body.contains("order N not found"),
            "{name}: {}",
            list.body
        );
        assert!(list.body.contains("timeout after Ns"), "{name}");
        let key = &fp_key(&list.body, "order N not found");
        assert!(
            list.body.contains(&format!("href=\"groups/{key}\">3</a>")),
            "{name}: {}",
            list.body
        );
        // The dry run: the page says how many before anything happens.
        let page = get(&app, &format!("/failed/groups/{key}")).await;
        assert!(page.body.contains("Retry all 3"), "{name}: {}", page.body);
        assert!(page.body.contains("Delete all 3"), "{name}");
        let before_at = page.body.find("name=\"before\" value=\"").expect("before") + 21;
        let before = &page.body[before_at..];
        let before = &before[..before.find('"').expect("its end")];
        // A job that fails with the same error after the page was loaded stays.
        tokio::time::sleep(Duration::from_millis(5)).await;
        dispatch(&queue, &q, 5).await;
        let lease = reserve(&queue, &q).await;
        storage
            .fail(&lease, "order 55 not found")
            .await
            .expect("failed");
        let done = post(
            &app,
            &format!("/failed/groups/{key}/retry"),
            &format!("before={before}"),
        )
        .await;
        // The action runs in the background: its task's page, then its counts.
        let location = done.location.clone().unwrap_or_default();
        assert!(
            location.starts_with("../../../tasks/"),
            "{name}: {location} {}",
            done.body
        );
        let task = ended_task(&app, &location).await;
        assert_eq!(
            (
                task["total"].as_u64(),
                task["done"].as_u64(),
                task["held"].as_u64()
            ),
            (Some(3), Some(3), Some(0)),
            "{name}: {task}"
        );
        assert!(task["error"].is_null(), "{name}: {task}");
        assert!(
            task["what"]
                .as_str()
                .is_some_and(|w| w.contains("order N not found")),
            "{name}: {task}"
        );
        let size = queue
            .storage()
            .inspect()
            .expect("a listing")
            .size(&q)
            .await
            .expect("a size");
        assert_eq!(size.waiting, 3, "{name}: the group's three are back");
        let store = queue.storage().failed_store().expect("a failed store");
        assert_eq!(store.count().await.expect("count"), 2, "{name}");
        let after = get(&app, &format!("/failed/groups/{key}")).await;
        assert!(
            after.body.contains("Delete all 1"),
            "{name}: the later one stays"
        );
        // Delete the other group whole.
        let other = fp_key(&get(&app, "/failed/groups").await.body, "timeout after Ns");
        let page = get(&app, &format!("/failed/groups/{other}")).await;
        let before_at = page.body.find("name=\"before\" value=\"").expect("before") + 21;
        let before = &page.body[before_at..];
        let before = &before[..before.find('"').expect("its end")];
        let done = post(
            &app,
            &format!("/failed/groups/{other}/forget"),
            &format!("before={before}"),
        )
        .await;
        let location = done.location.clone().unwrap_or_default();
        let task = ended_task(&app, &location).await;
        assert_eq!(
            (task["total"].as_u64(), task["done"].as_u64()),
            (Some(1), Some(1)),
            "{name}: {task}"
        );
        assert_eq!(store.count().await.expect("count"), 1, "{name}");
        assert_eq!(
            get(&app, "/failed/groups/0000000000000000").await.status,
            StatusCode::NOT_FOUND
        );
        // Read-only: the group, no buttons; the action refused.
        let read_only =
            queue_dashboard::router_with(queue.clone(), queue_dashboard::Access::ReadOnly);
        let page = get(&read_only, &format!("/failed/groups/{key}")).await;
        assert!(!page.body.contains("method=\"post\""), "{name}");
    }
}

/// The key of the group whose error is `error` in a `/failed/groups` page.
fn fp_key(list: &str, error: &str) -> String {
    let at = list.find(error).expect("the group");
    let row = &list[list[..at].rfind("<tr").expect("its row")..];
    let key_at = row.find("data-group=\"").expect("a key") + 12;
    row[key_at..key_at + 16].to_owned()
}

/// The workers page and the overview's workers line: a worker running a job shows itself
/// with its busy slot and the job; gone once it stops (SQLite and Redis).
#[tokio::test]
async fn workers_are_shown_with_their_running_jobs() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let q = format!("w-{name}");
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let started_tx = std::sync::Mutex::new(Some(started_tx));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        queue.listen("slow", move |_: u32, _ctx| {
            let started = started_tx.lock().expect("a lock").take();
            let mut release = release_rx.clone();
            async move {
                if let Some(tx) = started {
                    let _ = tx.send(());
                }
                let _ = release.wait_for(|r| *r).await;
                Ok(())
            }
        });
        queue
            .dispatch_named("slow", serde_json::json!(1))
            .on_queue(q.as_str())
            .await
            .expect("dispatched");
        let worker = queue.worker(
            queue_core::WorkerOptions::default()
                .queues([q.as_str()])
                .concurrency(2),
        );
        let stop = worker.stop_handle();
        let running = tokio::spawn(worker.run());
        tokio::time::timeout(Duration::from_secs(10), started_rx)
            .await
            .expect("the job starts")
            .expect("a start");
        let app = queue_dashboard::router(queue.clone());
        // The registry says busy at the next beat (every 10 s).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
        let page = loop {
            let page = get(&app, "/workers").await;
            assert_eq!(page.status, StatusCode::OK, "{name}");
            if page.body.contains("<td class=\"n busy\">1 / 2</td>") {
                break page;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: the worker never showed a busy slot: {}",
                page.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            page.body.contains("1 worker, 1 of 2 slots busy"),
            "{name}: {}",
            page.body
        );
        assert!(
            page.body.contains(&format!("href=\"queues/{}\"", enc(&q))),
            "{name}"
        );
        let overview = get(&app, "/").await;
        assert!(
            overview
                .body
                .contains("<span class=\"worker-count\">1</span>"),
            "{name}: {}",
            overview.body
        );
        let metrics = get(&app, "/metrics").await;
        assert!(
            metrics.body.contains("runall_workers 1"),
            "{name}: {}",
            metrics.body
        );
        let _ = release_tx.send(true);
        stop.stop();
        running
            .await
            .expect("the worker task")
            .expect("the worker stops");
        let page = get(&app, "/workers").await;
        assert!(
            page.body.contains("No worker is running"),
            "{name}: {}",
            page.body
        );
    }
}

/// Every action lands in the audit log, refused ones too, with who asked it; a chain's and a
/// workflow's pages show their counts.
#[tokio::test]
async fn actions_are_audited_and_compositions_have_pages() {
    let (queue, _dir) = common::sqlite().await;
    dispatch(&queue, "mail", 1).await;
    let app = queue_dashboard::router(queue.clone());
    let empty = get(&app, "/audit").await;
    assert!(empty.body.contains("No action yet"), "{}", empty.body);
    assert_eq!(
        post(&app, "/queues/mail/pause", "").await.status,
        StatusCode::SEE_OTHER
    );
    let refused = post_as(&app, "/queues/mail/resume", "csrf=nope", None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let log = get(&app, "/audit").await;
    let pause = log
        .body
        .find("POST /queues/mail/pause")
        .expect("the pause is logged");
    let resume = log
        .body
        .find("POST /queues/mail/resume")
        .expect("the refusal is logged");
    assert!(resume < pause, "newest first: {}", log.body);
    assert!(log.body.contains("done (303)"), "{}", log.body);
    assert!(log.body.contains("(403)"), "{}", log.body);
    assert!(log.body.contains("browser session "), "{}", log.body);
    assert!(log.body.contains("no session"), "{}", log.body);
    assert!(log.body.contains("kept in the store"), "{}", log.body);
    // Another dashboard process on the same store (a new router: nothing in its memory)
    // shows the same log, and the JSON twin says where it is kept.
    let other = queue_dashboard::router(queue.clone());
    let again = get(&other, "/audit").await;
    assert!(
        again.body.contains("POST /queues/mail/pause") && again.body.contains("(403)"),
        "{}",
        again.body
    );
    let json: serde_json::Value =
        serde_json::from_str(&get(&other, "/api/audit").await.body).expect("JSON");
    assert_eq!(json["kept_in"], "store", "{json}");
    assert_eq!(json["entries"][0]["path"], "/queues/mail/resume", "{json}");
    assert_eq!(json["entries"][0]["status"], 403, "{json}");
    assert_eq!(json["entries"][1]["path"], "/queues/mail/pause", "{json}");
    if let Some(queue) = common::memcached().await {
        // No group counters: the log is this process's, and the page says so.
        let app = queue_dashboard::router(queue.clone());
        let refused = post_as(&app, "/queues/mail/resume", "csrf=nope", None).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let log = get(&app, "/audit").await;
        assert!(
            log.body.contains("kept in this process only"),
            "{}",
            log.body
        );
        assert!(
            log.body.contains("POST /queues/mail/resume"),
            "{}",
            log.body
        );
        let other = queue_dashboard::router(queue);
        assert!(get(&other, "/audit").await.body.contains("No action yet"));
    }

    queue.listen("link", |_: u32, _ctx| async move { Ok(()) });
    let chain = queue_core::Chain::new()
        .then(
            queue
                .dispatch_named("link", serde_json::json!(1))
                .on_queue("links"),
        )
        .then(
            queue
                .dispatch_named("link", serde_json::json!(2))
                .on_queue("links"),
        )
        .via(&queue)
        .dispatch()
        .await
        .expect("a chain");
    let page = get(&app, &format!("/chains/{}", enc(&chain.0))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("<dd class=\"chain-state\">running</dd>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-refresh=\"2\""), "{}", page.body);
    queue
        .worker(
            queue_core::WorkerOptions::default()
                .queues(["links"])
                .stop_when_empty(),
        )
        .run()
        .await
        .expect("the worker");
    let page = get(&app, &format!("/chains/{}", enc(&chain.0))).await;
    assert!(
        page.body
            .contains("<dd class=\"chain-state\">finished</dd>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<dd class=\"succeeded\">2</dd>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("data-refresh"), "{}", page.body);
    assert_eq!(
        get(&app, "/chains/no-such").await.status,
        StatusCode::NOT_FOUND
    );

    let workflow = queue_core::Workflow::new();
    let a = workflow.add(
        "a",
        queue
            .dispatch_named("link", serde_json::json!(3))
            .on_queue("links"),
    );
    workflow
        .add(
            "b",
            queue
                .dispatch_named("link", serde_json::json!(4))
                .on_queue("links"),
        )
        .after(&a);
    let id = workflow.via(&queue).dispatch().await.expect("a workflow");
    let page = get(&app, &format!("/workflows/{}", enc(&id.0))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("0 of 2 nodes ended"), "{}", page.body);
    assert_eq!(
        get(&app, "/workflows/no-such").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_overview_charts_what_the_workers_ended() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        queue.listen("charted", |n: u32, _| async move {
            if n.is_multiple_of(4) {
                Err(queue_core::JobError::fail("no"))
            } else {
                Ok(())
            }
        });
        for n in 1..=8u32 {
            queue
                .dispatch_named("charted", serde_json::json!(n))
                .on_queue("charts")
                .tries(1)
                .await
                .expect("dispatched");
        }
        for n in 0..3 {
            dispatch(&queue, "mail", n).await;
        }
        // The worker adds its counts to the history when it stops.
        queue
            .worker(
                queue_core::WorkerOptions::default()
                    .queues(["charts"])
                    .stop_when_empty(),
            )
            .run()
            .await
            .expect("the worker runs");
        let app = queue_dashboard::router(queue.clone());
        let page = get(&app, "/").await;
        assert_eq!(page.status, StatusCode::OK, "{name}");
        assert!(
            page.body.contains(
                "Last hour: <span class=\"processed\">6</span> succeeded, <span class=\"failed\">2</span> failed"
            ),
            "{name}: {}",
            page.body
        );
        assert!(
            page.body.contains("Last day: 6 succeeded, 2 failed"),
            "{name}"
        );
        assert_eq!(
            page.body.matches("<svg class=\"chart\"").count(),
            2,
            "{name}"
        );
        assert!(
            page.body.contains("UTC: 6 succeeded, 2 failed, wait"),
            "{name}: the current minute's bar is titled with its numbers"
        );
        for p in ["p50", "p95", "p99"] {
            assert!(
                page.body.contains(&format!("<span class=\"{p}\">")),
                "{name}: the hour's {p} wait: {}",
                page.body
            );
        }
        assert!(
            page.body.contains("Backlog: 3 waiting"),
            "{name}: {}",
            page.body
        );
        // The same history in Prometheus' text: what ended, the starts, their waits.
        let metrics = get(&app, "/metrics").await;
        for window in ["1h", "24h"] {
            for line in [
                format!("runall_history_jobs{{window=\"{window}\",outcome=\"succeeded\"}} 6"),
                format!("runall_history_jobs{{window=\"{window}\",outcome=\"failed\"}} 2"),
                format!("runall_history_starts{{window=\"{window}\"}} 8"),
                format!("runall_history_wait_seconds_mean{{window=\"{window}\"}} "),
            ] {
                assert!(
                    metrics.body.contains(&line),
                    "{name}: {line} in\n{}",
                    metrics.body
                );
            }
            // The percentiles are numbers, in order.
            let quantile = |q: &str| -> f64 {
                let line =
                    format!("runall_history_wait_seconds{{window=\"{window}\",quantile=\"{q}\"}} ");
                let at = metrics.body.find(&line).unwrap_or_else(|| {
                    panic!("{name}: {line} in\n{}", metrics.body);
                }) + line.len();
                let value = metrics.body[at..].lines().next().unwrap_or_default();
                value
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}: {value}: {e}"))
            };
            let (p50, p95, p99) = (quantile("0.5"), quantile("0.95"), quantile("0.99"));
            assert!(
                0.0 <= p50 && p50 <= p95 && p95 <= p99,
                "{name}: {p50} {p95} {p99}"
            );
        }
    }
    if let Some(queue) = common::memcached().await {
        let app = queue_dashboard::router(queue);
        let page = get(&app, "/").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("group counters"), "{}", page.body);
        assert!(!page.body.contains("<svg class=\"chart\""));
        let metrics = get(&app, "/metrics").await;
        assert!(
            !metrics.body.contains("runall_history_"),
            "{}",
            metrics.body
        );
        assert!(
            metrics
                .body
                .contains("# not available: the memcached driver"),
            "{}",
            metrics.body
        );
    }
}

#[tokio::test]
async fn the_json_twins_answer_what_the_pages_show() {
    let json = |body: &str| -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        queue.listen("twin", |n: u32, _| async move {
            if n == 3 {
                Err(queue_core::JobError::fail("three is bad"))
            } else {
                Ok(())
            }
        });
        for n in 1..=4u32 {
            queue
                .dispatch_named("twin", serde_json::json!(n))
                .on_queue("twins")
                .tries(1)
                .await
                .expect("dispatched");
        }
        let waiting = dispatch(&queue, "twins-later", 1).await;
        queue
            .worker(
                queue_core::WorkerOptions::default()
                    .queues(["twins"])
                    .stop_when_empty(),
            )
            .run()
            .await
            .expect("the worker runs");
        let app = queue_dashboard::router(queue.clone());

        let reply = get(&app, "/api/overview").await;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.body);
        let overview = json(&reply.body);
        assert_eq!(overview["driver"], name, "{name}");
        let later = overview["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["name"] == "twins-later"))
            .unwrap_or_else(|| panic!("{name}: {overview}"));
        assert_eq!(
            (&later["waiting"], &later["delayed"], &later["paused"]),
            (
                &serde_json::json!(1),
                &serde_json::json!(0),
                &serde_json::json!(false)
            ),
            "{name}: {overview}"
        );
        assert!(overview["failed"].as_u64() >= Some(1), "{name}: {overview}");

        let history = json(&get(&app, "/api/history").await.body);
        let hour = &history["last_hour"];
        assert!(
            hour["processed"].as_u64() >= Some(3) && hour["failed"].as_u64() >= Some(1),
            "{name}: {hour}"
        );
        assert!(hour["wait_p95_ms"].is_u64(), "{name}: {hour}");
        assert_eq!(history["minutes"].as_array().map(Vec::len), Some(60));
        assert_eq!(history["hours"].as_array().map(Vec::len), Some(24));

        let job = json(
            &get(&app, &format!("/api/jobs/{}", enc(&waiting.0)))
                .await
                .body,
        );
        assert_eq!(
            (&job["state"], &job["queue"]),
            (
                &serde_json::json!("pending"),
                &serde_json::json!("twins-later")
            ),
            "{name}: {job}"
        );
        let missing = get(&app, "/api/jobs/no-such-job").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{name}");
        assert!(json(&missing.body)["error"].is_string(), "{name}");

        let failed = json(&get(&app, "/api/failed?limit=500").await.body);
        let ours = failed["items"]
            .as_array()
            .and_then(|items| items.iter().find(|f| f["name"] == "twin"))
            .unwrap_or_else(|| panic!("{name}: {failed}"));
        assert_eq!(ours["error"], "three is bad", "{name}: {ours}");
        assert!(
            ours.get("payload").is_none(),
            "{name}: no payload in a list"
        );

        let workers = get(&app, "/api/workers").await;
        assert_eq!(workers.status, StatusCode::OK, "{name}");
        assert!(json(&workers.body).is_array(), "{name}");

        let listed = json(
            &get(&app, "/api/queues/twins-later?state=waiting")
                .await
                .body,
        );
        assert_eq!(listed["items"][0]["id"], waiting.0, "{name}: {listed}");
        assert_eq!(listed["state"], "waiting", "{name}");
        let bogus = get(&app, "/api/queues/twins-later?state=bogus").await;
        assert_eq!(bogus.status, StatusCode::NOT_FOUND, "{name}");
        let batch = queue_core::Batch::new()
            .add(
                queue
                    .dispatch_named("twin", serde_json::json!(1))
                    .on_queue("twins-batch"),
            )
            .via(&queue)
            .dispatch()
            .await
            .expect("a batch");
        let one = json(
            &get(&app, &format!("/api/batches/{}", enc(&batch.0)))
                .await
                .body,
        );
        assert_eq!(
            (&one["total"], &one["pending"]),
            (&serde_json::json!(1), &serde_json::json!(1)),
            "{name}: {one}"
        );
        let batches = json(&get(&app, "/api/batches?limit=500").await.body);
        assert!(batches["items"].is_array(), "{name}: {batches}");
        for path in ["/api/schedules", "/api/locks"] {
            let reply = get(&app, path).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{name} {path}: {}",
                reply.body
            );
            assert!(json(&reply.body)["items"].is_array(), "{name} {path}");
        }

        let nothing = get(&app, "/api/nothing-here").await;
        assert_eq!(nothing.status, StatusCode::NOT_FOUND, "{name}");
        assert!(json(&nothing.body)["error"].is_string(), "{name}");
    }
    if let Some(queue) = common::memcached().await {
        let app = queue_dashboard::router(queue);
        let reply = get(&app, "/api/history").await;
        assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED, "{}", reply.body);
        let body = json(&reply.body);
        assert_eq!(body["unsupported"], true, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("memcached")),
            "{body}"
        );
        let overview = json(&get(&app, "/api/overview").await.body);
        assert_eq!(overview["driver"], "memcached", "{overview}");
        for path in ["/api/locks", "/api/batches", "/api/queues/mail"] {
            let reply = get(&app, path).await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_IMPLEMENTED,
                "{path}: {}",
                reply.body
            );
            assert_eq!(json(&reply.body)["unsupported"], true, "{path}");
        }
    }
}

/// A task's JSON once it has ended (polled for up to 10 s).
async fn ended_task(app: &Router, location: &str) -> serde_json::Value {
    let id = location.rsplit('/').next().expect("a task id");
    for _ in 0..100 {
        let reply = get(app, &format!("/api/tasks/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let task: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
        if !task["finished_at"].is_null() {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {id} did not end");
}

/// Retry or delete the failed jobs a filter selects, after a dry run that counts them, in
/// the background with a progress page; clear a queue the same way. Only what the dry run
/// counted is touched.
#[tokio::test]
async fn bulk_actions_count_first_and_run_in_the_background() {
    let (stores, _dir) = common::stores().await;
    for (name, queue) in stores {
        let q = format!("bulk-{}", std::process::id());
        let other = format!("bulk-other-{}", std::process::id());
        for n in 0..5 {
            failed(&queue, &q, n).await;
        }
        failed(&queue, &other, 9).await;
        let app = queue_dashboard::router(queue.clone());

        let dry = get(&app, &format!("/failed/select?queue={q}&error=BOOM")).await;
        assert_eq!(dry.status, StatusCode::OK, "{name}: {}", dry.body);
        assert!(
            dry.body.contains("<strong>5</strong> failed jobs match"),
            "{name}: {}",
            dry.body
        );
        assert!(dry.body.contains("Retry 5"), "{name}");
        let bad = get(&app, "/failed/select?since=soon").await;
        assert_eq!(
            bad.status,
            StatusCode::CONFLICT,
            "{name}: a bad duration is refused"
        );

        // The dry run's time bounds the action: a job failing after it stays.
        let before = queue_core::storage::unix_millis(std::time::SystemTime::now());
        tokio::time::sleep(Duration::from_millis(20)).await;
        failed(&queue, &q, 7).await;
        let started = post(
            &app,
            "/failed/select/retry",
            &format!("queue={q}&error=boom&before={before}"),
        )
        .await;
        assert_eq!(
            started.status,
            StatusCode::SEE_OTHER,
            "{name}: {}",
            started.body
        );
        let location = started.location.clone().expect("to the task's page");
        assert!(location.starts_with("../../tasks/"), "{name}: {location}");
        let task = ended_task(&app, &location).await;
        assert_eq!(
            (&task["total"], &task["done"]),
            (&serde_json::json!(5), &serde_json::json!(5)),
            "{name}: {task}"
        );
        assert!(task["error"].is_null(), "{name}: {task}");
        let page = get(
            &app,
            &format!("/tasks/{}", location.rsplit('/').next().unwrap_or_default()),
        )
        .await;
        assert!(
            page.body.contains("id=\"task-state\">done<"),
            "{name}: {}",
            page.body
        );
        let left = json_of(&get(&app, "/api/failed?limit=500").await.body);
        let ours: Vec<_> = left["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|f| f["queue"] == q.as_str())
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "{name}: only the later failure is left: {ours:?}"
        );
        assert!(
            ours[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("boom 7")),
            "{name}"
        );
        let size = queue.storage().inspect().unwrap().size(&q).await.unwrap();
        assert_eq!(size.waiting, 5, "{name}: the 5 are back in their queue");

        // Delete by filter: the other queue's failure stays.
        let gone = post(
            &app,
            "/failed/select/forget",
            &format!(
                "queue={q}&before={}",
                queue_core::storage::unix_millis(std::time::SystemTime::now())
            ),
        )
        .await;
        let task = ended_task(&app, &gone.location.expect("a task")).await;
        assert_eq!(task["done"], 1, "{name}: {task}");
        let dry = get(&app, &format!("/failed/select?queue={other}")).await;
        assert!(
            dry.body.contains("<strong>1</strong> failed job match"),
            "{name}: {}",
            dry.body
        );

        // Clear the queue: a count first, then the 5 retried jobs are gone.
        let dry = get(&app, &format!("/queues/{q}/clear")).await;
        assert!(
            dry.body
                .contains("<strong>5</strong> jobs would be deleted"),
            "{name}: {}",
            dry.body
        );
        let cleared = post(&app, &format!("/queues/{q}/clear"), "").await;
        assert_eq!(
            cleared.status,
            StatusCode::SEE_OTHER,
            "{name}: {}",
            cleared.body
        );
        let task = ended_task(&app, &cleared.location.expect("a task")).await;
        assert_eq!(task["done"], 5, "{name}: {task}");
        let size = queue.storage().inspect().unwrap().size(&q).await.unwrap();
        assert_eq!(size.waiting + size.delayed, 0, "{name}");

        // A read-only viewer sees the count and no button, and cannot post.
        let ro = queue_dashboard::router_with(queue.clone(), queue_dashboard::Access::ReadOnly);
        let dry = get(&ro, &format!("/failed/select?queue={other}")).await;
        assert!(!dry.body.contains("Delete 1"), "{name}");
        let refused = post(
            &ro,
            "/failed/select/forget",
            &format!("queue={other}&before=0"),
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{name}");
    }
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}
