//! A time limit on work that is built inside the limit's own future, so the work is never
//! moved. `tokio::time::timeout` takes the future by value: a call's tries are a future of
//! some 4,000 bytes, which rustc built in a stack temporary, copied into the `Timeout` and
//! copied again into the caller's state: 8 KB of copying for every request, in a 14 KB stack
//! frame (decision 97). Here the caller hands over a closure that makes the work, and the work
//! is made where it is polled.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use tokio::time::Instant;

/// The limit passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Runs the future `make` makes until `deadline`: its output, or [`Elapsed`] if the deadline
/// passed first (the work is then dropped where it stands). A deadline, not a duration: the
/// caller knows when its work began, and a call reads the clock once for all its bookkeeping
/// rather than once more for each limit.
pub async fn until<F: Future>(
    deadline: Instant,
    make: impl FnOnce() -> F,
) -> Result<F::Output, Elapsed> {
    let mut work = pin!(make());
    // Outside the task's budget, as `tokio::time::timeout` polls its delay: work that spent
    // the budget must not keep its own limit from firing.
    let mut limit = pin!(tokio::task::unconstrained(tokio::time::sleep_until(
        deadline
    )));
    poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        limit.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// [`until`] `limit` from now.
    async fn within<F: Future>(
        limit: Duration,
        make: impl FnOnce() -> F,
    ) -> Result<F::Output, Elapsed> {
        until(Instant::now() + limit, make).await
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_gives_its_output() {
        let got = within(Duration::from_secs(5), || async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            7
        })
        .await;
        assert_eq!(got, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_its_limit_is_dropped_at_the_limit() {
        let started = tokio::time::Instant::now();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct OnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let guard = OnDrop(dropped.clone());
        let got = within(Duration::from_secs(5), || async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        })
        .await;
        assert_eq!(got, Err(Elapsed));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_counts_from_when_the_caller_says_the_work_began() {
        let began = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        let got = until(began + Duration::from_secs(5), || async {
            tokio::time::sleep(Duration::from_secs(4)).await;
        })
        .await;
        assert_eq!(got, Err(Elapsed));
        assert_eq!(began.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn the_limit_fires_for_work_that_always_spends_the_budget() {
        // Work that always has more to do but yields to the scheduler once the task's budget
        // is spent, as a busy stream does: a limit polled inside the budget never fired.
        let busy = within(Duration::from_millis(10), || async {
            loop {
                tokio::task::consume_budget().await;
            }
        });
        let got = tokio::time::timeout(Duration::from_secs(30), busy).await;
        assert_eq!(got, Ok(Err(Elapsed)));
    }
}
