//! The one error type of the dashboard.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, DOCTYPE};

/// `Result` with the dashboard's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the dashboard: serving it, or answering one request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue's store said no (a backend error, or an operation it does not support).
    #[error(transparent)]
    Queue(#[from] queue_core::Error),
    /// A page or an action named something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be honoured as asked (a bad parameter, a refused action).
    #[error("{0}")]
    Refused(String),
    /// A state-changing request from another site (the same-origin check).
    #[error("cross-origin request refused")]
    CrossOrigin,
    /// An action asked with read-only access ([`Access::ReadOnly`](crate::Access)).
    #[error(
        "this dashboard is read-only for you: actions need full access (`runall serve --token`, \
         or the application's own authentication)"
    )]
    ReadOnly,
    /// A form posted without the page's CSRF token, or with a stale one.
    #[error(
        "the form's CSRF token is missing or does not match this browser's session: reload the \
         page and try again"
    )]
    Csrf,
    /// `runall serve` was asked to listen beyond the loopback interface with no token.
    #[error(
        "refusing to serve the dashboard on {addr} without a token: anyone who can reach it \
         could pause queues and cancel jobs; pass --token TOKEN (or RUNALL_DASHBOARD_TOKEN) or \
         --read-only-token TOKEN, or bind 127.0.0.1"
    )]
    OpenToTheNetwork {
        /// The address asked for.
        addr: std::net::SocketAddr,
    },
    /// An empty token was given.
    #[error("the dashboard token must not be empty")]
    EmptyToken,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the dashboard server failed: {0}")]
    Serve(std::io::Error),
}

impl Error {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Refused(_) => StatusCode::CONFLICT,
            Error::CrossOrigin | Error::ReadOnly | Error::Csrf => StatusCode::FORBIDDEN,
            Error::Queue(queue_core::Error::NotFound { .. }) => StatusCode::NOT_FOUND,
            Error::Queue(queue_core::Error::NotSupported { .. }) => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answers with a small page of its own (no links: its depth under the mount
/// point is not known here) and the status that fits.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "dashboard request failed");
        }
        let page = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { "runall: " (status.as_u16()) }
                }
                body {
                    h1 { (status.canonical_reason().unwrap_or("Error")) }
                    p.error { (self.to_string()) }
                }
            }
        };
        (status, page).into_response()
    }
}
