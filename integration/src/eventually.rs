//! Polling with a deadline: tests and xtask wait for a state by asking for it again and again
//! until it holds or time runs out. Never a sleep that hopes a state has arrived.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Every wait in a test gives up after this long, so a broken feature fails instead of
/// hanging.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How often [`eventually`] asks again.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// A wait whose check never held.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {patience:?} waiting for {what}")]
pub struct TimedOut {
    /// What was awaited.
    pub what: String,
    /// How long it was awaited.
    pub patience: Duration,
}

/// Runs `check` every `interval` until it returns a value, for up to `patience` (the check is
/// always run at least once, and once more at the deadline).
pub async fn wait_for<T, F, Fut>(
    what: &str,
    patience: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        let last_chance = Instant::now() >= deadline;
        if let Some(value) = check().await {
            return Ok(value);
        }
        if last_chance {
            return Err(TimedOut {
                what: what.to_string(),
                patience,
            });
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Polls `check` until it holds; fails the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = wait_for(what, DEADLINE, INTERVAL, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
    if let Err(timed_out) = waited {
        panic!("{timed_out}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_check_that_never_holds_times_out_at_the_deadline() {
        let started = Instant::now();
        let mut asked = 0;
        let result = wait_for("nothing", Duration::from_secs(1), INTERVAL, || {
            asked += 1;
            async { None::<()> }
        })
        .await;
        assert_eq!(
            result.map_err(|e| e.to_string()),
            Err("timed out after 1s waiting for nothing".to_string())
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(
            asked, 21,
            "once at the start, every 50 ms, once at the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_holds_returns_its_value_at_once() {
        let started = Instant::now();
        let mut asked = 0;
        let value = wait_for("the third ask", DEADLINE, INTERVAL, || {
            asked += 1;
            let n = asked;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(value.ok(), Some(3));
        assert_eq!(started.elapsed(), INTERVAL * 2);
    }
}
