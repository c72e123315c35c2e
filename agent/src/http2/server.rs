//! Drives a [`Connection`] over a socket in one task: it reads frames, calls the service for
//! each request and polls the calls' futures itself, and writes their answers as the client's
//! windows allow. No task is spawned per stream and no channel carries an answer: a call's
//! future is polled where its frames are written (hyper spawns one task per stream and hands
//! each answer to the connection's task through the h2 crate's shared stream store).
//!
//! A stream's future, its answer's body and its request body's reader wake the connection's
//! task through a per-stream waker that names the stream, so a wake-up polls that stream
//! alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::connection::{Connection, ConnectionError, Event, Limits};
use super::frame::{ErrorCode, StreamId};
use super::stream_map::{self, StreamMap};
use crate::body::Body;
use crate::body_inbox::{self, Inbox, SharedInbox};

/// Stops reading the client while this much waits to be written to it: a client that sends
/// PINGs or SETTINGS without reading the answers stalls itself, not this side's memory.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Rounds of reading, calling and writing one poll of a connection may take before it lets
/// the thread's other connections run.
const MAX_ROUNDS_PER_POLL: usize = 32;
/// What one read asks the socket for.
const READ_SIZE: usize = 16 * 1024;

/// How long a connection may be silent, and how long it then has to answer a PING.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    /// Silence after which a PING goes.
    pub interval: Duration,
    /// Time the client has to send anything after the PING before the connection is closed.
    pub timeout: Duration,
}

/// Serves one HTTP/2 connection: `service` answers each request.
pub struct Server<I, S, F> {
    io: I,
    connection: Connection,
    input: BytesMut,
    service: S,
    streams: StreamMap<StreamTask<F>>,
    call_boxes: CallBoxes<F>,
    ready: Arc<Ready>,
    /// Streams with more to send, held back while the output is over its high-water mark.
    blocked: Vec<StreamId>,
    /// No more requests are taken: a graceful shutdown started, or the client went away.
    closing: bool,
    /// The client closed its side of the socket.
    read_closed: bool,
    keep_alive: KeepAlive,
    last_read: Instant,
    ping_sent: bool,
    timer: Pin<Box<Sleep>>,
}

/// One stream's call.
struct StreamTask<F> {
    phase: Phase<F>,
    /// The request body's shared state, while the request has one.
    inbox: Option<SharedInbox>,
    waker: Waker,
    /// A CONNECT stream, until an answer other than 2xx refuses it: its two directions end
    /// apart, and a failure is CONNECT_ERROR.
    tunnel: bool,
}

/// Where a stream's call lives: a box that outlasts the call, so the next stream can reuse it.
type CallSlot<F> = Pin<Box<Option<F>>>;

/// The boxes of a connection's calls, one kept emptied for the next call. A call's future is
/// some 6,000 bytes, above glibc's thread cache: allocated from the heap's bins for each
/// stream, and every few times after consolidating them, it cost more than the stream's other
/// allocations together (decision 95).
struct CallBoxes<F> {
    spare: Option<CallSlot<F>>,
    /// Boxes allocated, for the tests.
    #[cfg(test)]
    made: usize,
}

impl<F> CallBoxes<F> {
    fn new() -> Self {
        CallBoxes {
            spare: None,
            #[cfg(test)]
            made: 0,
        }
    }

    /// A box holding the call `make` makes: the spare one if there is one. A new box exists
    /// before the call's future is made, so the future is written into it rather than built on
    /// the stack and copied in whole (decision 94); so is it into a spare one.
    fn hold(&mut self, make: impl FnOnce() -> F) -> CallSlot<F> {
        if let Some(mut slot) = self.spare.take() {
            slot.set(Some(make()));
            return slot;
        }
        #[cfg(test)]
        {
            self.made += 1;
        }
        Box::into_pin(Box::write(Box::new_uninit(), Some(make())))
    }

    /// Takes back a call's box once the call answered; its future is dropped now.
    fn give_back(&mut self, mut slot: CallSlot<F>) {
        slot.set(None);
        self.spare.get_or_insert(slot);
    }
}

enum Phase<F> {
    /// The service is working out the answer (the slot holds the call until it answers).
    Calling(CallSlot<F>),
    /// The answer's head went; its body is being sent, `pending` waiting for window.
    Sending {
        body: Body,
        pending: Option<(Bytes, bool)>,
    },
    /// The call answered and its box went back: the answer's head is going out. A tunnel
    /// stays here when its answer ended while its client still sends (TCP's half-close, RFC
    /// 9113 §8.5): the stream lives until the client's end.
    Answered,
}

/// Streams whose wakers fired since the connection last looked, and the connection's waker.
#[derive(Default)]
struct Ready {
    inner: Mutex<ReadyInner>,
}

#[derive(Default)]
struct ReadyInner {
    streams: Vec<StreamId>,
    connection: Option<Waker>,
}

impl Ready {
    fn mark(&self, stream: StreamId) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.streams.push(stream);
        // Woken in place, under the lock: a waker only queues the task, it never polls it, and
        // a clone to wake outside would cost two atomic operations on every wake-up.
        if let Some(waker) = &inner.connection {
            waker.wake_by_ref();
        }
    }

    /// Marks `stream` without waking: the connection is running and looks again before it
    /// sleeps.
    fn later(&self, stream: StreamId) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .streams
            .push(stream);
    }

    fn take(&self, waker: &Waker, into: &mut Vec<StreamId>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner
            .connection
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            inner.connection = Some(waker.clone());
        }
        into.append(&mut inner.streams);
    }
}

/// The waker of one stream: marks it ready and wakes the connection.
struct StreamWaker {
    stream: StreamId,
    ready: Arc<Ready>,
}

impl Wake for StreamWaker {
    fn wake(self: Arc<Self>) {
        self.ready.mark(self.stream);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.mark(self.stream);
    }
}

impl<I, S, F> Server<I, S, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<Body>) -> F,
    F: Future<Output = Response<Body>>,
{
    /// A server for `io`, whose client has not sent its preface yet.
    pub fn new(io: I, limits: Limits, keep_alive: KeepAlive, service: S) -> Self {
        Server {
            io,
            connection: Connection::new(limits),
            input: BytesMut::with_capacity(READ_SIZE),
            service,
            streams: stream_map::new(),
            ready: Arc::new(Ready::default()),
            call_boxes: CallBoxes::new(),
            blocked: Vec::new(),
            closing: false,
            read_closed: false,
            keep_alive,
            last_read: Instant::now(),
            ping_sent: false,
            timer: Box::pin(tokio::time::sleep(keep_alive.interval)),
        }
    }

    /// Stops taking requests (GOAWAY) and ends once the ones taken are answered.
    pub fn graceful_shutdown(&mut self) {
        if !self.closing {
            self.closing = true;
            self.connection.go_away();
            self.ready.mark(0);
        }
    }

    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServeError>> {
        let mut woken = Vec::new();
        for _ in 0..MAX_ROUNDS_PER_POLL {
            for stream in woken.drain(..) {
                self.drive(stream);
            }
            let mut progress = false;
            if !self.read_closed && self.connection.output().len() < OUTPUT_HIGH_WATER {
                progress |= self.poll_read(cx)?;
            }
            while let Some(event) = self.connection.next_event() {
                progress = true;
                self.on_event(event);
            }
            self.ready.take(cx.waker(), &mut woken);
            for stream in woken.drain(..) {
                progress = true;
                self.drive(stream);
            }
            progress |= self.poll_write(cx)?;
            if self.connection.output().len() < OUTPUT_HIGH_WATER && !self.blocked.is_empty() {
                // The socket took the backlog: the answers it held back go on.
                woken.append(&mut self.blocked);
                progress = true;
            }
            if self.connection.output().is_empty()
                && self.streams.is_empty()
                && (self.read_closed || self.closing)
            {
                return Poll::Ready(Ok(()));
            }
            if self.poll_keep_alive(cx)? {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // A connection that always has work gives the thread's other tasks their turn.
        self.blocked.append(&mut woken);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads what the client sent and hands it to the connection.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, ServeError> {
        self.input.reserve(READ_SIZE);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input) {
            Poll::Ready(Ok(0)) => {
                self.read_closed = true;
                Ok(true)
            }
            Poll::Ready(Ok(_)) => {
                self.last_read = Instant::now();
                self.ping_sent = false;
                if let Err(error) = self.connection.receive(&mut self.input) {
                    // The GOAWAY is written if the socket takes it; the connection ends either way.
                    self.closing = true;
                    let _ = self.poll_write(cx);
                    return Err(ServeError::Protocol(error));
                }
                Ok(true)
            }
            Poll::Ready(Err(error)) => Err(ServeError::Io(error)),
            Poll::Pending => Ok(false),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, ServeError> {
        let mut progress = false;
        while !self.connection.output().is_empty() {
            let output = self.connection.output();
            match Pin::new(&mut self.io).poll_write(cx, output) {
                Poll::Ready(Ok(0)) => {
                    return Err(ServeError::Io(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    let _ = output.split_to(n);
                    progress = true;
                }
                Poll::Ready(Err(error)) => return Err(ServeError::Io(error)),
                Poll::Pending => break,
            }
        }
        if self.connection.output().is_empty()
            && self.connection.output().capacity() > READ_SIZE * 4
        {
            // A burst's buffer is not kept for an idle connection.
            *self.connection.output() = BytesMut::new();
        }
        Ok(progress)
    }

    /// PINGs a silent client and closes one that stays silent (decision 62). The timer is
    /// re-armed when it fires, not at every read.
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Result<bool, ServeError> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(false);
            }
            let wait = if self.ping_sent {
                self.keep_alive.timeout
            } else {
                self.keep_alive.interval
            };
            let now = Instant::now();
            let due = self.last_read + wait;
            if now < due {
                self.timer.as_mut().reset(due);
                continue;
            }
            if self.ping_sent {
                return Err(ServeError::Silent(
                    self.keep_alive.interval + self.keep_alive.timeout,
                ));
            }
            self.ping_sent = true;
            self.last_read = now;
            self.connection.ping();
            // Written on the next turn.
            self.ready.mark(0);
            self.timer.as_mut().reset(now + self.keep_alive.timeout);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Request {
                stream,
                request,
                end_stream,
            } => {
                if self.closing {
                    self.connection.reset(stream, ErrorCode::REFUSED_STREAM);
                    return;
                }
                let waker = Waker::from(Arc::new(StreamWaker {
                    stream,
                    ready: Arc::clone(&self.ready),
                }));
                let (body, inbox) = if end_stream {
                    (crate::body::empty(), None)
                } else {
                    let remaining = request
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    // Each read wakes the stream, which gives the window back.
                    let (inbox, body) = body_inbox::pair(Some(waker.clone()), remaining);
                    (crate::body::boxed(body), Some(inbox))
                };
                let tunnel = request.method() == http::Method::CONNECT;
                let service = &mut self.service;
                let call = self.call_boxes.hold(|| service(request.map(|()| body)));
                self.streams.insert(
                    stream,
                    StreamTask {
                        phase: Phase::Calling(call),
                        inbox,
                        waker,
                        tunnel,
                    },
                );
                self.drive(stream);
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => self.deliver(stream, |inbox| {
                inbox.put(data);
                if end_stream {
                    inbox.end(None);
                }
            }),
            Event::Trailers { stream, trailers } => {
                self.deliver(stream, |inbox| inbox.end(Some(trailers)))
            }
            Event::Reset {
                stream,
                code,
                reason,
            } => {
                if let Some(task) = self.streams.remove(&stream) {
                    fail(task.inbox.as_ref(), format!("{reason} ({:#x})", code.0));
                }
            }
            Event::WindowOpened => {
                for (stream, task) in &self.streams {
                    if matches!(
                        task.phase,
                        Phase::Sending {
                            pending: Some(_),
                            ..
                        }
                    ) {
                        self.ready.later(*stream);
                    }
                }
            }
            Event::GoAway => self.closing = true,
        }
    }

    /// Hands request body bytes to the stream's reader.
    fn deliver(&mut self, stream: StreamId, put: impl FnOnce(&mut Inbox)) {
        let Some(task) = self.streams.get(&stream) else {
            return;
        };
        let answered = matches!(task.phase, Phase::Answered);
        let Some(inbox) = task.inbox.clone() else {
            return;
        };
        let mut inbox = body_inbox::lock(&inbox);
        put(&mut inbox);
        // Nobody reads, so the stream is driven to give the window back; or a half-closed
        // tunnel's client ended, and with it the stream. A reader's reads wake the stream
        // themselves.
        let drive = inbox.is_dropped() || (answered && inbox.is_ended());
        Inbox::wake_reader(inbox);
        if drive {
            self.ready.later(stream);
        }
    }

    /// Moves one stream on: gives back what its reader read, polls its call, sends its body.
    fn drive(&mut self, stream: StreamId) {
        let Some(task) = self.streams.get_mut(&stream) else {
            return;
        };
        match drive(&mut self.connection, stream, task, &mut self.call_boxes) {
            Driven::Waiting => {}
            Driven::Done => self.finish(stream),
            Driven::Blocked => self.blocked.push(stream),
        }
    }

    /// The answer went whole: the stream's call is over on this side.
    fn finish(&mut self, stream: StreamId) {
        if let Some(task) = self.streams.remove(&stream) {
            let inbox_open = task
                .inbox
                .as_ref()
                .is_some_and(|i| !body_inbox::lock(i).is_ended());
            if inbox_open {
                // The answer is complete before the request: the client may stop (§8.1). A
                // tunnel ends here only when its far side is gone.
                let (code, reason) = if task.tunnel {
                    (ErrorCode::CONNECT_ERROR, "the tunnel's far side closed")
                } else {
                    (
                        ErrorCode::NO_ERROR,
                        "the answer ended before the request's body",
                    )
                };
                self.connection.reset(stream, code);
                fail(task.inbox.as_ref(), reason.to_string());
            }
        }
    }
}

/// Whether a stream's call still has work to do.
#[derive(Debug, PartialEq, Eq)]
enum Driven {
    /// It waits for its future, its body or the client's window.
    Waiting,
    /// Its answer went whole, or failed and was reset.
    Done,
    /// It has more to send than the socket has taken: driven again once it has.
    Blocked,
}

/// Moves `task` on as far as it goes now.
fn drive<F>(
    connection: &mut Connection,
    stream: StreamId,
    task: &mut StreamTask<F>,
    call_boxes: &mut CallBoxes<F>,
) -> Driven
where
    F: Future<Output = Response<Body>>,
{
    if let Some(inbox) = &task.inbox {
        let consumed = body_inbox::lock(inbox).take_consumed();
        if consumed > 0 {
            connection.release(stream, consumed);
        }
    }
    let mut cx = Context::from_waker(&task.waker);
    loop {
        let answer_ended = match &mut task.phase {
            Phase::Calling(slot) => {
                // Never empty while calling: the box goes back as the phase moves on.
                let Some(call) = slot.as_mut().as_pin_mut() else {
                    return Driven::Done;
                };
                let Poll::Ready(response) = call.poll(&mut cx) else {
                    return Driven::Waiting;
                };
                // The call is over: its future goes now, and its box waits for the next stream.
                if let Phase::Calling(slot) = std::mem::replace(&mut task.phase, Phase::Answered) {
                    call_boxes.give_back(slot);
                }
                send_head(
                    connection,
                    stream,
                    &mut task.phase,
                    &mut task.tunnel,
                    response,
                )
            }
            Phase::Sending { body, pending } => {
                match send_body(connection, stream, body, pending, &mut cx, task.tunnel) {
                    Sent::Ended => true,
                    Sent::Reset => return Driven::Done,
                    Sent::More => continue,
                    Sent::Stopped(driven) => return driven,
                }
            }
            Phase::Answered => true,
        };
        if !answer_ended {
            continue;
        }
        let client_sending = || {
            task.inbox.as_ref().is_some_and(|inbox| {
                let inbox = body_inbox::lock(inbox);
                !inbox.is_finished() && !inbox.is_dropped()
            })
        };
        if task.tunnel && client_sending() {
            task.phase = Phase::Answered;
            return Driven::Waiting;
        }
        return Driven::Done;
    }
}

/// How far a step of sending an answer's body went.
enum Sent {
    /// The answer's end went.
    Ended,
    /// The body failed and the stream was reset.
    Reset,
    /// A frame went and the body may have more at once.
    More,
    /// Sending stopped for now.
    Stopped(Driven),
}

/// Sends an answer's head, and returns whether it was the whole answer; otherwise the stream
/// moves on to sending the body. A CONNECT answered other than 2xx stops being a tunnel.
fn send_head<F>(
    connection: &mut Connection,
    stream: StreamId,
    phase: &mut Phase<F>,
    tunnel: &mut bool,
    response: Response<Body>,
) -> bool {
    let (mut head, body) = response.into_parts();
    // A refused CONNECT is an ordinary answer (RFC 9110 §9.3.6).
    *tunnel &= head.status.is_success();
    let end = body.is_end_stream();
    if !end
        && !*tunnel
        && !head.headers.contains_key(http::header::CONTENT_LENGTH)
        && let Some(length) = body.size_hint().exact()
    {
        head.headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    connection.send_response(stream, head.status, &head.headers, end);
    if !end {
        *phase = Phase::Sending {
            body,
            pending: None,
        };
    }
    end
}

/// Sends what of an answer's body is at hand, as far as the windows and the output's
/// high-water mark let it.
fn send_body(
    connection: &mut Connection,
    stream: StreamId,
    body: &mut Body,
    pending: &mut Option<(Bytes, bool)>,
    cx: &mut Context<'_>,
    tunnel: bool,
) -> Sent {
    if let Some((data, end)) = pending {
        connection.send_data(stream, data, *end);
        if !data.is_empty() {
            // Waits for WINDOW_UPDATE (Event::WindowOpened marks it ready).
            return Sent::Stopped(Driven::Waiting);
        }
        if *end {
            return Sent::Ended;
        }
        *pending = None;
    }
    if connection.output().len() >= OUTPUT_HIGH_WATER {
        return Sent::Stopped(Driven::Blocked);
    }
    match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Pending => Sent::Stopped(Driven::Waiting),
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) => {
                *pending = Some((data, body.is_end_stream()));
                Sent::More
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    connection.send_trailers(stream, &trailers);
                    return Sent::Ended;
                }
                Sent::More
            }
        },
        Poll::Ready(None) => {
            connection.send_data(stream, &mut Bytes::new(), true);
            Sent::Ended
        }
        Poll::Ready(Some(Err(error))) => {
            tracing::debug!(stream, %error, "an answer's body failed; resetting its stream");
            let code = if tunnel {
                ErrorCode::CONNECT_ERROR
            } else {
                ErrorCode::INTERNAL_ERROR
            };
            connection.reset(stream, code);
            Sent::Reset
        }
    }
}

/// Ends a request body that will get no more data; its reader gets `reason`.
fn fail(inbox: Option<&SharedInbox>, reason: String) {
    if let Some(inbox) = inbox {
        let mut inbox = body_inbox::lock(inbox);
        inbox.fail(reason);
        Inbox::wake_reader(inbox);
    }
}

impl<I, S, F> Future for Server<I, S, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<Body>) -> F + Unpin,
    F: Future<Output = Response<Body>>,
{
    type Output = Result<(), ServeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_serve(cx)
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The client broke the protocol; GOAWAY told it why.
    #[error(transparent)]
    Protocol(ConnectionError),
    /// The socket failed.
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent nothing, not even an answer to a PING, for this long.
    #[error("the client was silent for {0:?}")]
    Silent(Duration),
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http_body::Frame;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::body::BoxError;

    /// A call that notes when it is dropped.
    struct NotedCall(Arc<std::sync::atomic::AtomicUsize>);

    impl Drop for NotedCall {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_calls_box_is_kept_for_the_next_call_and_its_call_dropped_when_given_back() {
        let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let dropped_now = || dropped.load(std::sync::atomic::Ordering::Relaxed);
        let mut boxes = CallBoxes::new();
        for turn in 0..3 {
            let slot = boxes.hold(|| NotedCall(Arc::clone(&dropped)));
            boxes.give_back(slot);
            assert_eq!(
                dropped_now(),
                turn + 1,
                "the call goes when its box comes back"
            );
        }
        assert_eq!(boxes.made, 1, "calls one after another share one box");
        // Two at once need two boxes; one is kept of those that come back.
        let (first, second) = (
            boxes.hold(|| NotedCall(Arc::clone(&dropped))),
            boxes.hold(|| NotedCall(Arc::clone(&dropped))),
        );
        assert_eq!(boxes.made, 2);
        boxes.give_back(first);
        boxes.give_back(second);
        assert_eq!(dropped_now(), 5);
        let third = boxes.hold(|| NotedCall(Arc::clone(&dropped)));
        assert_eq!(boxes.made, 2, "the kept box is used");
        drop(third);
        assert_eq!(dropped_now(), 6);
    }

    const KEEP_ALIVE: KeepAlive = KeepAlive {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(10),
    };

    /// Echoes the request body back, with the request's method and path in headers, and a
    /// trailer when the request asks for one.
    async fn echo(request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.map(|c| c.to_bytes());
        let Ok(bytes) = bytes else {
            return Response::builder()
                .status(400)
                .body(crate::body::empty())
                .expect("response");
        };
        let mut response = Response::new(crate::body::full(bytes.clone()));
        let headers = response.headers_mut();
        headers.insert(
            "x-method",
            HeaderValue::from_str(parts.method.as_str()).expect("v"),
        );
        headers.insert(
            "x-path",
            HeaderValue::from_str(parts.uri.path()).expect("v"),
        );
        headers.insert("x-length", HeaderValue::from(bytes.len()));
        if parts.headers.contains_key("x-want-trailers") {
            let frames = vec![
                Ok::<_, BoxError>(Frame::data(bytes)),
                Ok(Frame::trailers({
                    let mut t = HeaderMap::new();
                    t.insert("grpc-status", HeaderValue::from_static("0"));
                    t
                })),
            ];
            *response.body_mut() = StreamBody::new(futures_util_stream(frames)).boxed();
        }
        response
    }

    /// A stream of `items`, without a futures dependency in the library.
    fn futures_util_stream<T: Unpin>(items: Vec<T>) -> impl futures_core::Stream<Item = T> {
        futures_util::stream::iter(items)
    }

    async fn start() -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Result<(), ServeError>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            Server::new(stream, Limits::default(), KEEP_ALIVE, |request| {
                echo(request)
            })
            .await
        });
        (address, server)
    }

    async fn client(
        address: std::net::SocketAddr,
    ) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
        let stream = TcpStream::connect(address).await.expect("connect");
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        sender
    }

    fn request(method: &str, path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(format!("http://svc.mesh{path}"))
            .body(Full::new(Bytes::from(body)))
            .expect("request")
    }

    #[tokio::test]
    async fn a_hyper_client_gets_answers_with_bodies_both_ways_and_trailers() {
        let (address, server) = start().await;
        let mut sender = client(address).await;
        let answer = sender
            .send_request(request("GET", "/hello", vec![]))
            .await
            .expect("answer");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["x-method"], "GET");
        assert_eq!(answer.headers()["x-path"], "/hello");
        assert_eq!(answer.headers()["x-length"], "0");
        // An answer held keeps its stream, and the client's connection, open.
        drop(answer);

        // 3 MB up and back: far past every default window, so both directions wait for
        // WINDOW_UPDATEs.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let answer = sender
            .send_request(request("POST", "/upload", big.clone()))
            .await
            .expect("answer");
        assert_eq!(answer.headers()["x-length"], "3000000");
        assert_eq!(answer.headers()["content-length"], "3000000");
        let body = answer.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len(), big.len());
        assert!(body[..] == big[..], "the body came back as sent");

        let mut with_trailers = request("POST", "/rpc", b"ping".to_vec());
        with_trailers
            .headers_mut()
            .insert("x-want-trailers", HeaderValue::from_static("1"));
        let answer = sender.send_request(with_trailers).await.expect("answer");
        let collected = answer.into_body().collect().await.expect("body");
        assert_eq!(
            collected.trailers().map(|t| t["grpc-status"].clone()),
            Some(HeaderValue::from_static("0"))
        );
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"ping"));
        drop(sender);
        server.await.expect("joined").expect("a clean end");
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_socket_takes_at_once_goes_whole() {
        // A client with large windows: the answer outruns the socket, and the server must
        // wait for it to drain rather than spin (it once did, and the download stalled).
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let size = 10 * 1024 * 1024;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            Server::new(
                stream,
                Limits::default(),
                KEEP_ALIVE,
                move |_request| async move {
                    // In 16 KiB pieces, as an instance's answer streams through.
                    let pieces = (0..size / 16_384)
                        .map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![7u8; 16_384]))))
                        .collect();
                    Response::new(StreamBody::new(futures_util_stream(pieces)).boxed())
                },
            )
            .await
        });
        let stream = TcpStream::connect(address).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(32 << 20)
                .initial_connection_window_size(32 << 20)
                .handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        let download = async {
            let answer = sender
                .send_request(request("GET", "/big", vec![]))
                .await
                .expect("answer");
            answer
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .len()
        };
        let got = tokio::time::timeout(Duration::from_secs(60), download)
            .await
            .expect("the download finishes");
        assert_eq!(got, size);
        drop(sender);
        server.await.expect("joined").expect("a clean end");
    }

    #[tokio::test]
    async fn many_calls_share_one_connection_at_once() {
        let (address, server) = start().await;
        let sender = client(address).await;
        let calls = (0..50).map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let body = vec![b'a' + (i % 26) as u8; 10_000 + i * 1000];
                let answer = sender
                    .send_request(request("PUT", &format!("/{i}"), body.clone()))
                    .await
                    .expect("answer");
                assert_eq!(answer.headers()["x-path"], format!("/{i}").as_str());
                let got = answer.into_body().collect().await.expect("body").to_bytes();
                assert!(got[..] == body[..], "call {i}");
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.expect("call");
        }
        drop(sender);
        server.await.expect("joined").expect("a clean end");
    }

    #[tokio::test]
    async fn a_graceful_shutdown_finishes_the_call_under_way() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let (shut_tx, shut_rx) = tokio::sync::oneshot::channel::<()>();
        let gates = Arc::new(Mutex::new((Some(started_tx), Some(release_rx))));
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut server = Server::new(stream, Limits::default(), KEEP_ALIVE, move |_request| {
                let gates = Arc::clone(&gates);
                async move {
                    let (started, release) = {
                        let mut gates = gates.lock().expect("gates");
                        (gates.0.take(), gates.1.take())
                    };
                    if let (Some(started), Some(release)) = (started, release) {
                        let _ = started.send(());
                        let _ = release.await;
                    }
                    Response::new(crate::body::full("done"))
                }
            });
            let mut started_rx = started_rx;
            tokio::select! {
                result = &mut server => return result,
                _ = &mut started_rx => {}
            }
            server.graceful_shutdown();
            let _ = shut_tx.send(());
            server.await
        });
        let mut sender = client(address).await;
        let mut second = sender.clone();
        let first =
            tokio::spawn(async move { sender.send_request(request("GET", "/slow", vec![])).await });
        // Once the first call is under way the shutdown starts (its GOAWAY queued ahead of
        // the answer); then the call is let go.
        shut_rx.await.expect("the shutdown started");
        let _ = release_tx.send(());
        let answer = first
            .await
            .expect("joined")
            .expect("the call under way is answered");
        assert_eq!(
            answer.into_body().collect().await.expect("body").to_bytes(),
            Bytes::from_static(b"done")
        );
        assert!(
            second
                .send_request(request("GET", "/late", vec![]))
                .await
                .is_err(),
            "no new call after GOAWAY"
        );
        server.await.expect("joined").expect("a clean end");
    }
}
