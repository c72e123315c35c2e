//! The wait behind every "nothing moved for so long" bound on the data path (a call's
//! bodies, a client's writes): armed only when a read or write first has to wait, so a
//! transfer that never waits costs no timer; moved after each piece that passes, by reading
//! the clock only when it must wait again.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// One side's wait for movement, bounded by `idle`.
#[derive(Debug)]
pub struct IdleTimer {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The deadline is from before the last movement: move it before waiting again.
    stale: bool,
}

impl IdleTimer {
    /// A wait of at most `idle` between movements (`Duration::ZERO`: for ever).
    pub fn new(idle: Duration) -> Self {
        IdleTimer {
            idle,
            sleep: None,
            stale: false,
        }
    }

    /// The bound.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Something passed: the next wait starts from now.
    pub fn moved(&mut self) {
        self.stale = true;
    }

    /// Ready once nothing has moved for the whole bound. `moved_elsewhere` is asked when the
    /// timer fires, for movement this side did not see (the other body of a call): the wait
    /// goes on from there.
    pub fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        moved_elsewhere: impl Fn() -> Option<Instant>,
    ) -> Poll<()> {
        if self.idle.is_zero() {
            return Poll::Pending;
        }
        let sleep = match &mut self.sleep {
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(
                Instant::now() + self.idle,
            ))),
            Some(sleep) => {
                if self.stale {
                    sleep.as_mut().reset(Instant::now() + self.idle);
                }
                sleep
            }
        };
        self.stale = false;
        loop {
            ready!(sleep.as_mut().poll(cx));
            match moved_elsewhere() {
                Some(moved) if moved + self.idle > Instant::now() => {
                    sleep.as_mut().reset(moved + self.idle);
                }
                _ => return Poll::Ready(()),
            }
        }
    }
}
