//! Counts and durations in the command line's sentences: "1 job", "2 jobs", "7 days".

use std::time::Duration;

/// `n` and the noun that fits it: `count(1, "job", "jobs")` is "1 job".
pub(crate) fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration in words, largest units first, zero parts left out: "7 days", "1 hour 30
/// minutes", "500 milliseconds"; "0 seconds" for zero.
pub(crate) fn span(d: Duration) -> String {
    const UNITS: [(u64, &str, &str); 4] = [
        (86_400, "day", "days"),
        (3_600, "hour", "hours"),
        (60, "minute", "minutes"),
        (1, "second", "seconds"),
    ];
    let mut secs = d.as_secs();
    let mut parts = Vec::new();
    for (size, one, many) in UNITS {
        if secs >= size {
            parts.push(count(secs / size, one, many));
            secs %= size;
        }
    }
    let millis = d.subsec_millis();
    if millis > 0 {
        parts.push(count(millis, "millisecond", "milliseconds"));
    }
    if parts.is_empty() {
        return "0 seconds".to_owned();
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(1u64, "job", "jobs"), "1 job");
        assert_eq!(count(0u64, "job", "jobs"), "0 jobs");
        assert_eq!(count(2u32, "batch", "batches"), "2 batches");
    }

    #[test]
    fn spans() {
        assert_eq!(span(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(span(Duration::from_secs(86_400)), "1 day");
        assert_eq!(span(Duration::from_secs(5_400)), "1 hour 30 minutes");
        assert_eq!(span(Duration::from_secs(61)), "1 minute 1 second");
        assert_eq!(
            span(Duration::from_millis(1_500)),
            "1 second 500 milliseconds"
        );
        assert_eq!(span(Duration::from_millis(1)), "1 millisecond");
        assert_eq!(span(Duration::ZERO), "0 seconds");
    }
}
