//! Passwords out of URLs, for logs and errors.

/// A URL with its password replaced by `***`, for logs and errors.
///
/// ```
/// assert_eq!(
///     queue_core::redact_url("postgres://app:s3cret@db:5432/app"),
///     "postgres://app:***@db:5432/app"
/// );
/// assert_eq!(queue_core::redact_url("redis://:pw@h/0"), "redis://:***@h/0");
/// assert_eq!(queue_core::redact_url("sqlite://jobs.db"), "sqlite://jobs.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}
