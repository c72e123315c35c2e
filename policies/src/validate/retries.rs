//! Retry policies, as a `ServicePolicy` sets them for a service and a `Route` rule overrides them.

use std::collections::BTreeSet;

use super::Checker;
use crate::diagnostic::FieldPath;
use crate::{Duration, MAX_RETRY_ATTEMPTS, RetryPolicy};

/// Shortest and longest retry-budget windows.
pub const RETRY_BUDGET_WINDOW: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(60));
/// Largest `retries.budget.minPerSecond`.
pub const MAX_RETRY_FLOOR_PER_SECOND: u32 = 1_000_000;

/// Checks `retries`; `request` is the request timeout that bounds each try, when one applies.
pub(super) fn check(
    c: &mut Checker,
    path: &FieldPath,
    retries: &RetryPolicy,
    request: Option<Duration>,
) {
    if retries.attempts > MAX_RETRY_ATTEMPTS {
        c.error(
            path.key("attempts"),
            format!(
                "must be between 0 and {MAX_RETRY_ATTEMPTS}, got {}",
                retries.attempts
            ),
        );
    }
    if let Some(per_try) = retries.per_try_timeout {
        c.positive(path.key("perTryTimeout"), per_try);
        if let Some(request) = request {
            c.not_longer(
                path.key("perTryTimeout"),
                ("per-try timeout", per_try),
                ("the request timeout", request),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, status) in retries.statuses.iter().enumerate() {
        if !(100..=599).contains(status) {
            c.error(
                path.key("statuses").index(i),
                format!("{status} is not an HTTP status (100-599)"),
            );
        } else if !seen.insert(*status) {
            c.warning(
                path.key("statuses").index(i),
                format!("status {status} is listed twice"),
            );
        }
    }
    let budget = path.key("budget");
    c.share(budget.key("ratio"), retries.budget.ratio);
    let (shortest, longest) = RETRY_BUDGET_WINDOW;
    if !(shortest..=longest).contains(&retries.budget.window) {
        c.error(
            budget.key("window"),
            format!(
                "must be between {shortest} and {longest}, got {}",
                retries.budget.window
            ),
        );
    }
    if retries.budget.min_per_second > MAX_RETRY_FLOOR_PER_SECOND {
        c.error(
            budget.key("minPerSecond"),
            format!(
                "must be at most {MAX_RETRY_FLOOR_PER_SECOND}, got {}",
                retries.budget.min_per_second
            ),
        );
    }
    c.not_longer(
        path.key("backoff").key("base"),
        ("base backoff", retries.backoff.base),
        ("the maximum", retries.backoff.max),
    );
}
