//! Small writes held back until the worker thread's round of tasks ends, then sent together.
//!
//! A proxy that sends each answer the moment it has it wakes its peers once per answer: the
//! client's thread and the instance's are put back on a CPU for every request, and on a virtual
//! machine each such wake-up costs an interrupt between CPUs, charged to the sender. haproxy
//! reads every connection that is ready, then sends what it has, so its peers find several
//! answers per wake-up; under the same closed-loop load the agent woke them about three times
//! as often (decisions 95 and 96). Here a write of up to [`HELD_WRITE_MAX`] bytes is copied to
//! its connection's outbox and counted as written; the worker sends every outbox when it runs
//! out of tasks (`on_thread_park`), or after [`ROUND_WRITES_MAX`] writes, whichever comes
//! first, so a worker that never idles still sends. No task is polled again for it.
//!
//! Only threads whose runtime ends rounds (worker threads that have parked once, see
//! [`end_round`]) hold writes back; anywhere else a write goes out at once.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker, ready};

use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::unconstrained;

/// Largest write held back. Bigger writes gain little from company and would cost a copy.
pub const HELD_WRITE_MAX: usize = 16 * 1024;

/// Most bytes one connection holds back. Past it the connection sends what it holds itself,
/// and a socket that takes nothing makes its writer wait (back-pressure, as without holding).
pub const HELD_BYTES_MAX: usize = 64 * 1024;

/// Writes on one thread, held or sent at once, after which the round ends early: a worker that
/// always has another task ready never parks, and its connections must not wait for it to.
pub const ROUND_WRITES_MAX: u32 = 64;

/// Room an emptied outbox keeps for the next writes; more is given back, so a connection that
/// once held a burst does not keep its size while idle.
pub const HELD_CAPACITY_KEPT: usize = 4 * 1024;

thread_local! {
    /// This thread's round: `None` on a thread whose rounds nobody ends.
    static ROUND: RefCell<Option<Round>> = const { RefCell::new(None) };
}

/// The outboxes holding writes on this thread since its round began.
#[derive(Default)]
struct Round {
    outboxes: Vec<Arc<Outbox>>,
    /// Writes on this thread, held or sent at once, since the round began.
    writes: u32,
}

/// Ends this thread's round: sends what every outbox of it holds. Installed as the runtime's
/// `on_thread_park`, so a worker sends before it sleeps; its first call also makes the thread
/// one that holds writes back.
pub fn end_round() {
    let mut outboxes = ROUND.with(|round| {
        let mut round = round.borrow_mut();
        let round = round.get_or_insert_with(Round::default);
        round.writes = 0;
        std::mem::take(&mut round.outboxes)
    });
    if outboxes.is_empty() {
        return;
    }
    for outbox in outboxes.drain(..) {
        outbox.send_at_round_end();
    }
    // Give the emptied list back, so a round costs no allocation.
    ROUND.with(|round| {
        if let Some(round) = round.borrow_mut().as_mut()
            && round.outboxes.is_empty()
        {
            round.outboxes = outboxes;
        }
    });
}

/// What this thread's round made of a write.
enum Counted {
    /// Counted; the round goes on.
    InRound,
    /// Counted, and the round has reached [`ROUND_WRITES_MAX`] with something held: end it.
    RoundFull,
    /// This thread holds nothing back: send now.
    NoRound,
}

/// Counts a write on this thread, first entering `enter` in the round when given (an outbox
/// about to hold its first bytes of the round).
fn count_write(enter: Option<&Arc<Outbox>>) -> Counted {
    ROUND.with(|round| match round.borrow_mut().as_mut() {
        None => Counted::NoRound,
        Some(round) => {
            if let Some(outbox) = enter {
                round.outboxes.push(Arc::clone(outbox));
            }
            round.writes = round.writes.saturating_add(1);
            if round.writes >= ROUND_WRITES_MAX && !round.outboxes.is_empty() {
                Counted::RoundFull
            } else {
                Counted::InRound
            }
        }
    })
}

/// One connection's sending side: the socket and what it holds back for the round.
///
/// Shared by the connection (which writes) and, while it holds bytes, by its thread's round
/// (which sends them), so a connection dropped with bytes held still sends them before the
/// socket closes. Bytes held while the socket is full go when it drains, by a waker of their
/// own; that waker does not keep the outbox alive, so a connection dropped while its peer reads
/// nothing closes as it would without holding.
#[derive(Debug)]
pub struct Outbox {
    /// The write half, `None` only while the outbox is dropped.
    half: Option<OwnedWriteHalf>,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    bytes: Vec<u8>,
    /// In its thread's round list, to be sent when the round ends.
    in_round: bool,
    /// The socket took nothing more; the drain waker sends the rest when it can.
    blocked: bool,
    /// A held send failed: every later write, flush and shutdown fails with it.
    failed: Option<io::Error>,
    /// The writer waiting for held bytes to drain.
    waiter: Option<Waker>,
}

impl Held {
    fn failure(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|error| match error.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(error.kind(), error.to_string()),
            })
    }

    fn hold(&mut self, bufs: &[IoSlice<'_>]) {
        for buf in bufs {
            self.bytes.extend_from_slice(buf);
        }
    }
}

/// What sending held bytes came to.
enum Sent {
    /// Everything held has gone.
    All,
    /// The socket is full; bytes remain.
    Blocked,
}

impl Outbox {
    /// The sending side of `half`.
    pub fn new(half: OwnedWriteHalf) -> Self {
        Outbox {
            half: Some(half),
            held: Mutex::new(Held::default()),
        }
    }

    fn stream(&self) -> io::Result<&TcpStream> {
        self.half
            .as_ref()
            .map(AsRef::as_ref)
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves plain bytes and flags, still consistent.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `bufs`: held for the round when small and the thread ends rounds, else sent now
    /// after whatever the outbox already holds.
    pub fn poll_write(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        let mut held = self.lock();
        if let Some(error) = held.failure() {
            return Poll::Ready(Err(error));
        }
        let fits = held.bytes.len() + total <= HELD_BYTES_MAX;
        if held.blocked {
            return Self::wait_with_held(&mut held, cx, bufs, fits);
        }
        if fits && total <= HELD_WRITE_MAX && total > 0 {
            match count_write((!held.in_round).then_some(self)) {
                Counted::NoRound => {}
                counted => {
                    held.in_round = true;
                    held.hold(bufs);
                    drop(held);
                    if matches!(counted, Counted::RoundFull) {
                        end_round();
                    }
                    return Poll::Ready(Ok(total));
                }
            }
        }
        if !held.bytes.is_empty() {
            self.send_or_leave_to_drain(&mut held);
            if held.blocked {
                return Self::wait_with_held(&mut held, cx, bufs, fits);
            }
            if let Some(error) = held.failure() {
                return Poll::Ready(Err(error));
            }
        }
        drop(held);
        self.poll_send_now(cx, bufs)
    }

    /// With the socket full, the drain waker sends what is held: this write joins it when it
    /// `fits`, or waits for it.
    fn wait_with_held(
        held: &mut Held,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        fits: bool,
    ) -> Poll<io::Result<usize>> {
        if fits {
            held.hold(bufs);
            return Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()));
        }
        held.waiter = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sends `bufs` at once, waiting for room in the socket with the writer's own waker.
    fn poll_send_now(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let stream = self.stream()?;
        loop {
            ready!(stream.poll_write_ready(cx))?;
            // A `WouldBlock` clears the readiness, so the next poll waits for the socket.
            match stream.try_io(Interest::WRITABLE, || send_gathered(stream, bufs)) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                sent => {
                    // A worker kept busy by big writes alone never parks: they count too.
                    if matches!(count_write(None), Counted::RoundFull) {
                        end_round();
                    }
                    return Poll::Ready(sent);
                }
            }
        }
    }

    /// Ready once nothing is held except what the round will send by itself.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut held = self.lock();
        if let Some(error) = held.failure() {
            return Poll::Ready(Err(error));
        }
        if held.blocked {
            held.waiter = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends everything held now, then ends the sending side (the FIN).
    pub fn poll_shutdown(self: &Arc<Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut held = self.lock();
        if let Some(error) = held.failure() {
            return Poll::Ready(Err(error));
        }
        if !held.blocked && !held.bytes.is_empty() {
            self.send_or_leave_to_drain(&mut held);
            if let Some(error) = held.failure() {
                return Poll::Ready(Err(error));
            }
        }
        if held.blocked {
            held.waiter = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(held);
        let stream = self.stream()?;
        Poll::Ready(
            rustix::net::shutdown(stream, rustix::net::Shutdown::Write).map_err(io::Error::from),
        )
    }

    /// The round's end: sends what is held, unless the socket was already full (its drain
    /// waker has it).
    fn send_at_round_end(self: &Arc<Self>) {
        let mut held = self.lock();
        held.in_round = false;
        if held.blocked || held.bytes.is_empty() || held.failed.is_some() {
            return;
        }
        self.send_or_leave_to_drain(&mut held);
    }

    /// Sends what is held. A full socket leaves the rest to the drain waker (the outbox is
    /// then blocked); a failure is recorded for the writer.
    fn send_or_leave_to_drain(self: &Arc<Self>, held: &mut Held) {
        match self.send_held(held) {
            Ok(Sent::All) => {}
            Ok(Sent::Blocked) => self.wait_for_room(held),
            Err(error) => Self::fail(held, error),
        }
    }

    /// Sends held bytes until they are gone or the socket is full.
    fn send_held(&self, held: &mut Held) -> io::Result<Sent> {
        let stream = self.stream()?;
        while !held.bytes.is_empty() {
            match stream.try_io(Interest::WRITABLE, || send_one(stream, &held.bytes)) {
                Ok(sent) if sent == held.bytes.len() => {
                    if held.bytes.capacity() > HELD_CAPACITY_KEPT {
                        held.bytes = Vec::new();
                    } else {
                        held.bytes.clear();
                    }
                }
                Ok(sent) => {
                    held.bytes.drain(..sent);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Sent::Blocked);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(Sent::All)
    }

    /// Marks the outbox blocked and sets its drain waker on the socket, sending again at once
    /// if room appeared meanwhile.
    fn wait_for_room(self: &Arc<Self>, held: &mut Held) {
        let waker = Waker::from(Arc::new(Drain(Arc::downgrade(self))));
        let mut cx = Context::from_waker(&waker);
        held.blocked = true;
        loop {
            // Outside the task's budget: an exhausted budget would wake the drain waker at
            // once, and the drain waker takes the lock this thread holds.
            let ready = match self.stream() {
                Ok(stream) => {
                    let mut ready = pin!(unconstrained(poll_fn(|cx| stream.poll_write_ready(cx))));
                    ready.as_mut().poll(&mut cx)
                }
                Err(error) => Poll::Ready(Err(error)),
            };
            match ready {
                Poll::Pending => return,
                Poll::Ready(Err(error)) => {
                    Self::fail(held, error);
                    return;
                }
                Poll::Ready(Ok(())) => match self.send_held(held) {
                    Ok(Sent::Blocked) => {}
                    Ok(Sent::All) => {
                        held.blocked = false;
                        return;
                    }
                    Err(error) => {
                        Self::fail(held, error);
                        return;
                    }
                },
            }
        }
    }

    /// The drain waker's work: the socket has room again.
    fn drain(self: &Arc<Self>) {
        let mut held = self.lock();
        if !held.blocked {
            return;
        }
        held.blocked = false;
        self.send_or_leave_to_drain(&mut held);
        let waiter = if held.blocked {
            None
        } else {
            held.waiter.take()
        };
        drop(held);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    fn fail(held: &mut Held, error: io::Error) {
        tracing::debug!(%error, "a held-back write failed");
        held.bytes = Vec::new();
        held.blocked = false;
        held.failed = Some(error);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // The read half closes the socket; dropping the write half as is would first send a
        // FIN of its own (`shutdown`), one more system call than a plain close.
        if let Some(half) = self.half.take() {
            half.forget();
        }
    }
}

/// Wakes when a full socket has room again, and sends what its outbox holds.
struct Drain(Weak<Outbox>);

impl Wake for Drain {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(outbox) = self.0.upgrade() {
            outbox.drain();
        }
    }
}

/// One `send` of `bytes`, without a `SIGPIPE` when the peer has gone.
fn send_one(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    rustix::net::send(stream, bytes, SendFlags::NOSIGNAL).map_err(io::Error::from)
}

/// One `sendmsg` of `bufs` (one `send` for a single slice), without a `SIGPIPE`.
fn send_gathered(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if let [one] = bufs {
        return send_one(stream, one);
    }
    rustix::net::sendmsg(
        stream,
        bufs,
        &mut SendAncillaryBuffer::default(),
        SendFlags::NOSIGNAL,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::net::TcpListener;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::socket_send::SocketSend;

    /// Runs `test` on the worker of a runtime like the agent's (one worker whose rounds end
    /// when it parks), after the worker has parked once, so it holds writes back. `block_on`'s
    /// own thread would hold nothing back.
    fn on_a_worker<F>(test: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_park(end_round)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                test.await
            })
            .await
            .unwrap()
        })
    }

    /// A connected pair: the near end for the runtime, the far end a plain blocking socket, so
    /// the test reads what has reached it without the runtime's help.
    async fn pair() -> (SocketSend, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let near = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (far, _) = listener.accept().unwrap();
        far.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (SocketSend::new(near), far)
    }

    /// What has reached `far` so far, without waiting.
    fn arrived(far: &std::net::TcpStream) -> Vec<u8> {
        far.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match (&*far).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => panic!("{error}"),
            }
        }
        far.set_nonblocking(false).unwrap();
        got
    }

    /// Reads `far` to its end, in a thread of its own.
    fn read_to_end(mut far: std::net::TcpStream) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            far.read_to_end(&mut got).unwrap();
            got
        })
    }

    #[test]
    fn a_small_write_waits_for_the_round_and_then_leaves_by_itself() {
        on_a_worker(async {
            let (mut near, far) = pair().await;
            near.write_all(b"held").await.unwrap();
            near.flush().await.unwrap();
            assert_eq!(arrived(&far), b"", "sent before the round ended");
            // The task waits on something else; the worker parks, and the write leaves.
            let mut read = [0u8; 1];
            let waited =
                tokio::time::timeout(Duration::from_millis(50), near.read(&mut read)).await;
            assert!(waited.is_err(), "the far end sent nothing");
            let mut got = [0u8; 4];
            (&far).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"held");
        });
    }

    #[test]
    fn a_round_that_never_parks_ends_after_its_most_writes() {
        on_a_worker(async {
            let (mut near, far) = pair().await;
            for _ in 0..ROUND_WRITES_MAX - 1 {
                near.write_all(b"x").await.unwrap();
            }
            assert_eq!(arrived(&far), b"", "sent before the round ended");
            near.write_all(b"x").await.unwrap();
            assert_eq!(arrived(&far).len(), ROUND_WRITES_MAX as usize);
        });
    }

    #[test]
    fn a_round_kept_busy_by_big_writes_ends_after_its_most_writes() {
        let drained = on_a_worker(async {
            let (mut near, far) = pair().await;
            let (mut busy, busy_far) = pair().await;
            let drained = read_to_end(busy_far);
            near.write_all(b"small").await.unwrap();
            let big = vec![0u8; HELD_WRITE_MAX + 1];
            for _ in 0..ROUND_WRITES_MAX - 2 {
                busy.write_all(&big).await.unwrap();
            }
            assert_eq!(arrived(&far), b"", "sent before the round ended");
            busy.write_all(&big).await.unwrap();
            assert_eq!(arrived(&far), b"small");
            busy.shutdown().await.unwrap();
            drained
        });
        drained.join().unwrap();
    }

    #[test]
    fn held_bytes_leave_in_order_with_big_writes_and_before_the_end() {
        let pieces: Vec<Vec<u8>> = (0..400u32)
            .map(|i| {
                let size = if i % 7 == 0 {
                    40_000
                } else {
                    1 + (i as usize * 37) % 3000
                };
                vec![(i % 251) as u8; size]
            })
            .collect();
        let expected = pieces.concat();
        let reader = on_a_worker(async move {
            let (mut near, far) = pair().await;
            let reader = read_to_end(far);
            for (i, piece) in pieces.iter().enumerate() {
                if i % 3 == 0 {
                    let (a, b) = piece.split_at(piece.len() / 2);
                    let mut slices = [IoSlice::new(a), IoSlice::new(b)];
                    let mut rest = &mut slices[..];
                    while !rest.is_empty() {
                        let n = near.write_vectored(rest).await.unwrap();
                        IoSlice::advance_slices(&mut rest, n);
                    }
                } else {
                    near.write_all(piece).await.unwrap();
                }
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            near.shutdown().await.unwrap();
            reader
        });
        let got = reader.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes arrived out of order");
    }

    #[test]
    fn small_writes_to_a_full_socket_wait_for_the_reader() {
        // Far more than the socket buffers and an outbox hold, in small writes.
        let total = 8 * 1024 * 1024;
        let reader = on_a_worker(async move {
            let (mut near, far) = pair().await;
            let writer = tokio::spawn(async move {
                let piece = [7u8; 1000];
                for _ in 0..total / 1000 {
                    near.write_all(&piece).await.unwrap();
                }
                near.shutdown().await.unwrap();
            });
            // Let the writer fill the socket before anyone reads.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!writer.is_finished(), "a full socket took everything");
            let reader = read_to_end(far);
            writer.await.unwrap();
            reader
        });
        assert_eq!(reader.join().unwrap().len(), total / 1000 * 1000);
    }

    #[test]
    fn a_connection_dropped_with_held_bytes_still_sends_them_before_closing() {
        let reader = on_a_worker(async {
            let (mut near, far) = pair().await;
            near.write_all(b"last words").await.unwrap();
            drop(near);
            read_to_end(far)
        });
        assert_eq!(reader.join().unwrap(), b"last words");
    }

    #[test]
    fn held_writes_to_a_closed_peer_fail() {
        on_a_worker(async {
            let (mut near, far) = pair().await;
            drop(far);
            let mut failed = None;
            // The first sends may still be taken before the peer's reset arrives.
            for _ in 0..1000 {
                match near.write_all(b"anyone?").await {
                    Ok(()) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Err(error) => {
                        failed = Some(error.kind());
                        break;
                    }
                }
            }
            assert!(
                matches!(
                    failed,
                    Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
                ),
                "{failed:?}"
            );
        });
    }
}
