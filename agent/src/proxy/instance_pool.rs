//! Kept-alive HTTP/1.1 connections to this host's instances. A connection goes back to its
//! instance's idle list when an answer's body ends cleanly, and a call takes the newest idle one
//! the instance has not closed, or opens a new one. The exchange on it is the call's own
//! (`instance_exchange`, decision 55): no task per connection. Upgrades still go through
//! hyper's client on a connection of their own, whose tasks the pool owns, so
//! [`InstancePool::close`] ends them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use hyphae_policies::ErrorChain;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::h1_wire::{encode_request_head, request_framing};
use super::instance_exchange::{Connection, Failed, Outgoing, exchange};
use crate::body::Body;
use crate::error::{Cause, ProxyError};
use crate::retry::is_unprocessed;
use crate::state::FastMap;

/// Idle connections kept per instance; more are closed as they come free. Enough for the
/// concurrency one agent sees toward one instance, few enough that a burst does not leave
/// hundreds of sockets open on the instance.
pub const MAX_IDLE_PER_INSTANCE: usize = 128;
/// How long a connection may stay idle before it is closed (as in hyper_util's client, 90 s):
/// an instance may have closed it meanwhile, and a long-idle one is the likeliest to be
/// half-closed. Checked when a call looks for a connection and in a sweep every half of it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a GET's or HEAD's body of undeclared length is waited for before its head goes.
/// Such a body usually has nothing in it: an HTTP/2 client may send the head without ending
/// its stream and end it with an empty DATA frame that arrives with the head, or a moment
/// after. Waited for that long, an empty body goes as none; one still pending after it goes
/// chunked as it comes (as Envoy sends every such body), so a caller that holds its body back
/// until it has an answer is not held up either.
const UNDECLARED_BODY_WAIT: Duration = Duration::from_millis(20);

/// Whether `body` is a GET's or HEAD's that has neither ended nor declared a length: its bytes
/// go chunked (hyper's client dropped them), unless [`read_first_bytes`] finds there are none.
fn has_undeclared_body(parts: &http::request::Parts, body: &Body) -> bool {
    matches!(parts.method, http::Method::GET | http::Method::HEAD)
        && !http_body::Body::is_end_stream(body)
        && http_body::Body::size_hint(body).exact().is_none()
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
}

/// `body` read up to its first bytes, for at most [`UNDECLARED_BODY_WAIT`]: with those bytes
/// still in it; ended, when it ends without any (empty data frames and empty trailers count
/// as none); as it is, when nothing has come by then. Trailers with fields count as bytes:
/// they go in the last chunk.
async fn read_first_bytes(mut body: Body) -> Result<Body, crate::body::BoxError> {
    use http_body_util::BodyExt as _;
    let deadline = Instant::now() + UNDECLARED_BODY_WAIT;
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
            return Ok(body);
        };
        match frame {
            None => return Ok(crate::body::Ended::UnknownLength.body()),
            Some(Ok(frame)) if frame.data_ref().is_some_and(Bytes::is_empty) => {}
            // Trailers with no field say nothing to send.
            Some(Ok(frame)) if frame.trailers_ref().is_some_and(http::HeaderMap::is_empty) => {
                return Ok(crate::body::Ended::UnknownLength.body());
            }
            Some(Ok(frame)) => return Ok(crate::body::read_ahead(frame, body)),
            Some(Err(error)) => return Err(error),
        }
    }
}

/// A connection waiting for its next request.
struct Idle {
    connection: Connection,
    since: Instant,
}

/// The idle lists, shared with the answers' bodies that give connections back.
#[derive(Default)]
struct Shared {
    idle: Mutex<IdleLists>,
}

/// Every instance's idle connections, newest last, and when they were last swept.
#[derive(Default)]
struct IdleLists {
    by_instance: FastMap<SocketAddr, Vec<Idle>>,
    swept: Option<Instant>,
}

impl Idle {
    /// Whether the connection can no longer be taken: idle too long, or closed by the
    /// instance.
    fn is_stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= IDLE_TIMEOUT || self.connection.is_closed()
    }
}

impl Shared {
    /// The newest idle connection to `address` the instance has not closed. Stale ones met on
    /// the way are dropped, which closes them; [`Shared::give_back`]'s sweep closes those
    /// further down.
    fn take(&self, address: SocketAddr) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.by_instance.get_mut(&address)?;
        let now = Instant::now();
        while let Some(connection) = list.pop() {
            if !connection.is_stale(now) {
                return Some(connection.connection);
            }
        }
        None
    }

    /// Keeps `connection` for the next request to `address`, unless the list is full. Every
    /// half [`IDLE_TIMEOUT`] it also closes the stale connections of every instance, so a
    /// burst's extra connections, and those to instances no longer called, do not stay open.
    fn give_back(&self, address: SocketAddr, connection: Connection) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle
            .swept
            .is_none_or(|swept| now.saturating_duration_since(swept) >= IDLE_TIMEOUT / 2)
        {
            idle.swept = Some(now);
            idle.by_instance.retain(|_, list| {
                list.retain(|connection| !connection.is_stale(now));
                !list.is_empty()
            });
        }
        let list = idle.by_instance.entry(address).or_default();
        if list.len() >= MAX_IDLE_PER_INSTANCE {
            // Connections the instance closed may fill the list (after it restarted, say).
            list.retain(|connection| !connection.is_stale(now));
        }
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(Idle {
                connection,
                since: now,
            });
        }
    }
}

/// HTTP/1.1 connections to local instances.
pub struct InstancePool {
    shared: Arc<Shared>,
    connect_timeout: Duration,
    /// Owns the tasks of upgrade connections.
    connections: TaskTracker,
    /// Ends every upgrade connection once the calls that used them have drained.
    closing: CancellationToken,
}

impl InstancePool {
    /// An empty pool whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        InstancePool {
            shared: Arc::default(),
            connect_timeout,
            connections: TaskTracker::new(),
            closing: CancellationToken::new(),
        }
    }

    /// Sends `request` (origin-form target, `Host` set) to the instance at `address` on an
    /// idle connection, or on a new one, taking answer heads of up to `max_head` bytes. A
    /// request whose head could not be written whole (its connection had closed, decision
    /// 30) goes once more on a new connection: its body was never read. Failing there too, it
    /// fails with [`ProxyError::Unprocessed`].
    pub async fn send(
        &self,
        address: SocketAddr,
        request: Request<Body>,
        max_head: usize,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, mut body) = request.into_parts();
        if has_undeclared_body(&parts, &body) {
            body = read_first_bytes(body)
                .await
                .map_err(|error| ProxyError::Reset(Cause::new(std::io::Error::other(error))))?;
        }
        let framing = request_framing(
            &parts.method,
            &mut parts.headers,
            http_body::Body::is_end_stream(&body),
            http_body::Body::size_hint(&body).exact(),
        );
        let mut head = Vec::new();
        encode_request_head(&parts.method, &parts.uri, &parts.headers, &mut head);
        let outgoing = Outgoing {
            method: parts.method,
            head: Bytes::from(head),
            body,
            framing,
        };
        let (connection, reused) = match self.shared.take(address) {
            Some(connection) => (connection, true),
            None => (self.connect(address).await?, false),
        };
        let outgoing = match exchange(
            connection,
            outgoing,
            reused,
            max_head,
            self.giving_back(address),
        )
        .await
        {
            Ok(response) => return Ok(response),
            Err(Failed::Other(error)) => return Err(error),
            Err(Failed::Unwritten(outgoing, error)) => {
                tracing::debug!(%address, %error, "the instance's connection closed before the request was written; sending it on a new one");
                outgoing
            }
        };
        let connection = self.connect(address).await?;
        match exchange(
            connection,
            outgoing,
            false,
            max_head,
            self.giving_back(address),
        )
        .await
        {
            Ok(response) => Ok(response),
            Err(Failed::Other(error)) => Err(error),
            Err(Failed::Unwritten(_, error)) => Err(ProxyError::Unprocessed(Cause::new(error))),
        }
    }

    /// What puts a connection back in `address`'s idle list once its exchange has ended.
    fn giving_back(&self, address: SocketAddr) -> impl FnOnce(Connection) + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move |connection| shared.give_back(address, connection)
    }

    /// Sends an upgrade request to the instance at `address` on a connection of its own, which
    /// becomes the upgraded stream after a 101 and is never pooled.
    pub async fn upgrade(
        &self,
        address: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let stream = self.open(address).await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_failed(address, Cause::new(e)))?;
        let closing = self.closing.clone();
        self.connections.spawn(async move {
            tokio::select! {
                result = connection.with_upgrades() => {
                    if let Err(error) = result {
                        tracing::debug!(%address, error = %ErrorChain(&error), "instance connection closed");
                    }
                }
                () = closing.cancelled() => {}
            }
        });
        sender.send_request(request).await.map_err(send_error)
    }

    /// Closes every connection; for upgraded ones, waits until their tasks have ended. The
    /// daemon calls this once the calls that used them have drained.
    pub async fn close(&self) {
        self.closing.cancel();
        self.connections.close();
        self.connections.wait().await;
        self.shared
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_instance
            .clear();
    }

    /// A new pooled connection to `address`.
    async fn connect(&self, address: SocketAddr) -> Result<Connection, ProxyError> {
        Ok(Connection::new(self.open(address).await?))
    }

    /// A TCP connection to `address`, with Nagle's algorithm off: heads and small bodies go
    /// at once.
    async fn open(&self, address: SocketAddr) -> Result<TcpStream, ProxyError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| ProxyError::ConnectTimeout(address.to_string()))?
            .map_err(|e| connect_failed(address, Cause::new(e)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_failed(address, Cause::new(e)))?;
        Ok(stream)
    }
}

/// A connection to `address` that could not be made.
fn connect_failed(address: SocketAddr, reason: Cause) -> ProxyError {
    ProxyError::ConnectFailed {
        address: address.to_string(),
        reason,
    }
}

/// A failed upgrade exchange: not written at all (the connection had closed) is
/// [`ProxyError::Unprocessed`], anything else a reset.
fn send_error(error: hyper::Error) -> ProxyError {
    if is_unprocessed(&error) {
        ProxyError::Unprocessed(Cause::new(error))
    } else {
        ProxyError::Reset(Cause::new(error))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;
    use crate::body;

    /// An HTTP/1.1 server on loopback counting the connections it accepts; it answers
    /// `Connection: close` to paths starting with `/close`.
    async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let mut answer = Response::new(body::full("ok"));
                        if request.uri().path().starts_with("/close") {
                            answer.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(answer)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (address, accepted)
    }

    async fn get(pool: &InstancePool, address: SocketAddr, path: &'static str) {
        let mut request = Request::new(body::empty());
        *request.uri_mut() = http::Uri::from_static(path);
        let response = pool.send(address, request, 65536).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }

    #[tokio::test]
    async fn a_gets_undeclared_body_is_read_up_to_its_first_bytes_and_keeps_them() {
        use http_body_util::{BodyExt as _, StreamBody};
        let frames = |chunks: Vec<&'static [u8]>| -> Body {
            let stream = futures_util::stream::iter(chunks.into_iter().map(|chunk| {
                Ok::<_, crate::body::BoxError>(http_body::Frame::data(Bytes::from_static(chunk)))
            }));
            StreamBody::new(stream).boxed()
        };
        let get = |body: &Body| {
            let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
            has_undeclared_body(&parts, body)
        };
        // Ends with empty frames only (an HTTP/2 client's empty DATA after the head): ended.
        let empty = frames(vec![b"", b""]);
        assert!(get(&empty));
        let empty = read_first_bytes(empty).await.unwrap();
        assert!(http_body::Body::is_end_stream(&empty));
        // Has bytes: all of them still there, the first one included.
        let some = frames(vec![b"", b"hel", b"lo"]);
        let some = read_first_bytes(some).await.unwrap();
        assert!(!http_body::Body::is_end_stream(&some));
        let bytes = some.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, Bytes::from_static(b"hello"));
        // Trailers first: still to be sent, in the last chunk; empty ones are nothing.
        let mut fields = http::HeaderMap::new();
        fields.insert("x-sum", http::HeaderValue::from_static("3"));
        let trailers = StreamBody::new(futures_util::stream::iter([
            Ok::<_, crate::body::BoxError>(http_body::Frame::trailers(fields)),
        ]))
        .boxed();
        let trailers = read_first_bytes(trailers).await.unwrap();
        assert!(!http_body::Body::is_end_stream(&trailers));
        let empty_trailers =
            StreamBody::new(futures_util::stream::iter([
                Ok::<_, crate::body::BoxError>(http_body::Frame::trailers(http::HeaderMap::new())),
            ]))
            .boxed();
        let empty_trailers = read_first_bytes(empty_trailers).await.unwrap();
        assert!(http_body::Body::is_end_stream(&empty_trailers));
        // Nothing yet after the wait: the body goes as it is, to be sent as it comes.
        let (_sender, pending) = channel_body();
        let pending = read_first_bytes(pending).await.unwrap();
        assert!(!http_body::Body::is_end_stream(&pending));
        // A declared length or another method is left alone.
        assert!(!get(&crate::body::full("x")));
        let (post, ()) = Request::post("/").body(()).unwrap().into_parts();
        assert!(!has_undeclared_body(&post, &frames(vec![b"x"])));
    }

    #[tokio::test]
    async fn calls_one_after_another_share_one_kept_alive_connection() {
        let (address, accepted) = counting_server().await;
        let pool = InstancePool::new(Duration::from_secs(1));
        for _ in 0..5 {
            get(&pool, address, "/").await;
            // The connection task marks the connection ready after the answer has ended.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        pool.close().await;
    }

    #[tokio::test]
    async fn a_connection_the_instance_closes_is_not_taken_again() {
        let (address, accepted) = counting_server().await;
        let pool = InstancePool::new(Duration::from_secs(1));
        for _ in 0..3 {
            get(&pool, address, "/close").await;
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        pool.close().await;
    }

    /// A server on loopback that runs `script` on each connection it accepts (with the
    /// connection's number from 0), so a test can send exactly the bytes it needs.
    async fn scripted<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(index, stream));
            }
        });
        (address, accepted)
    }

    /// Reads one request head (up to its blank line) from `stream`.
    async fn read_head(stream: &mut TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// The answer to a `GET /` sent through `pool`.
    async fn answer_to_get(pool: &InstancePool, address: SocketAddr) -> Response<Body> {
        pool.send(
            address,
            request(http::Method::GET, "/", body::empty()),
            65536,
        )
        .await
        .unwrap()
    }

    fn request(method: http::Method, path: &'static str, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = http::Uri::from_static(path);
        request
    }

    #[tokio::test]
    async fn a_chunked_answer_with_trailers_arrives_whole_and_its_connection_is_reused() {
        use tokio::io::AsyncWriteExt;
        let (address, accepted) = scripted(|_, mut stream| async move {
            loop {
                if read_head(&mut stream).await.is_empty() {
                    return;
                }
                let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                              5\r\nhello\r\n6;x=y\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n";
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
        })
        .await;
        let pool = InstancePool::new(Duration::from_secs(1));
        for _ in 0..3 {
            let answer = answer_to_get(&pool, address).await;
            let collected = answer.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
            assert_eq!(&collected.to_bytes()[..], b"hello world");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        pool.close().await;
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_goes_chunked_with_its_announced_trailers() {
        let (address, _) = scripted(|_, stream| async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                let chunked = request.headers().get("transfer-encoding").cloned();
                let collected = request.into_body().collect().await.unwrap();
                let trailer = collected.trailers().and_then(|t| t.get("x-sum").cloned());
                let text = format!(
                    "{:?} {:?} {}",
                    chunked,
                    trailer,
                    String::from_utf8_lossy(&collected.to_bytes())
                );
                Ok::<_, std::convert::Infallible>(Response::new(body::full(text)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
        .await;
        let (sender, streamed) = channel_body();
        let mut call = request(http::Method::POST, "/up", streamed);
        call.headers_mut()
            .insert("trailer", http::HeaderValue::from_static("x-sum"));
        tokio::spawn(async move {
            for part in ["one ", "two"] {
                sender
                    .send(http_body::Frame::data(Bytes::from(part)))
                    .await
                    .unwrap();
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-sum", http::HeaderValue::from_static("7"));
            sender
                .send(http_body::Frame::trailers(trailers))
                .await
                .unwrap();
        });
        let pool = InstancePool::new(Duration::from_secs(1));
        let answer = pool.send(address, call, 65536).await.unwrap();
        let text = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&text),
            "Some(\"chunked\") Some(\"7\") one two"
        );
        pool.close().await;
    }

    /// A body made of the frames sent to its channel, ending when every sender is gone.
    struct Channel(tokio::sync::mpsc::Receiver<http_body::Frame<Bytes>>);

    impl http_body::Body for Channel {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|frame| frame.map(Ok))
        }
    }

    fn channel_body() -> (tokio::sync::mpsc::Sender<http_body::Frame<Bytes>>, Body) {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        (sender, body::boxed(Channel(receiver)))
    }

    #[tokio::test]
    async fn an_answer_sent_before_the_whole_request_body_reaches_the_caller() {
        use tokio::io::AsyncWriteExt;
        let (address, _) = scripted(|_, mut stream| async move {
            read_head(&mut stream).await;
            let answer = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!";
            stream.write_all(answer.as_bytes()).await.unwrap();
            // Closed without reading the body.
        })
        .await;
        // A body that never ends on its own: only the early answer can finish the call.
        let (sender, streamed) = channel_body();
        let pool = InstancePool::new(Duration::from_secs(1));
        let call = request(http::Method::PUT, "/file", streamed);
        let feeding = tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            while sender
                .send(http_body::Frame::data(chunk.clone()))
                .await
                .is_ok()
            {}
        });
        let answer = pool.send(address, call, 65536).await.unwrap();
        assert_eq!(answer.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        let text = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&text[..], b"big!");
        feeding.abort();
        pool.close().await;
    }

    #[tokio::test]
    async fn an_idle_connection_the_instance_closed_is_not_taken_and_an_answer_to_close_is_read_to_its_end()
     {
        use tokio::io::AsyncWriteExt;
        let (address, accepted) = scripted(|index, mut stream| async move {
            read_head(&mut stream).await;
            if index == 0 {
                // Kept alive as far as the answer says, then closed while idle.
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                stream.write_all(answer.as_bytes()).await.unwrap();
            } else {
                // Delimited by the close.
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
                    .await
                    .unwrap();
                stream.write_all(b"close").await.unwrap();
            }
        })
        .await;
        let pool = InstancePool::new(Duration::from_secs(1));
        get(&pool, address, "/").await;
        // The first connection is back in the idle list; wait until the instance's close of
        // it is visible to this side.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let closed = {
                let idle = pool.shared.idle.lock().unwrap();
                idle.by_instance[&address]
                    .iter()
                    .all(|c| c.connection.is_closed())
            };
            if closed || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let answer = answer_to_get(&pool, address).await;
        let text = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&text[..], b"until close");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert!(pool.shared.take(address).is_none());
        pool.close().await;
    }

    #[tokio::test]
    async fn a_head_larger_than_the_limit_or_a_cut_answer_is_a_reset() {
        use tokio::io::AsyncWriteExt;
        let (address, _) = scripted(|index, mut stream| async move {
            read_head(&mut stream).await;
            let answer = if index == 0 {
                format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "b".repeat(20_000))
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_string()
            };
            let _ = stream.write_all(answer.as_bytes()).await;
        })
        .await;
        let pool = InstancePool::new(Duration::from_secs(1));
        let big = pool
            .send(
                address,
                request(http::Method::GET, "/", body::empty()),
                16384,
            )
            .await;
        assert!(matches!(big, Err(ProxyError::Reset(_))), "{big:?}");
        let cut = pool
            .send(
                address,
                request(http::Method::GET, "/", body::empty()),
                16384,
            )
            .await
            .unwrap();
        assert!(cut.into_body().collect().await.is_err());
        pool.close().await;
    }

    #[tokio::test]
    async fn an_answer_head_trickling_in_after_an_interim_answer_is_read() {
        use tokio::io::AsyncWriteExt;
        let (address, _) = scripted(|_, mut stream| async move {
            read_head(&mut stream).await;
            stream.set_nodelay(true).unwrap();
            let wire =
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            for byte in wire {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        let pool = InstancePool::new(Duration::from_secs(1));
        get(&pool, address, "/").await;
        pool.close().await;
    }

    #[tokio::test]
    async fn a_caller_body_that_fails_ends_the_exchange_at_once() {
        let (address, _) = scripted(|_, mut stream| async move {
            read_head(&mut stream).await;
            // Waits for the rest of the body, which never comes; keeps the connection open.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
        })
        .await;
        /// A body that yields one frame, then fails.
        struct Failing(bool);
        impl http_body::Body for Failing {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                let first = !std::mem::replace(&mut self.0, true);
                std::task::Poll::Ready(Some(if first {
                    Ok(http_body::Frame::data(Bytes::from_static(b"part")))
                } else {
                    Err(std::io::Error::other("the caller went away"))
                }))
            }
        }
        let pool = InstancePool::new(Duration::from_secs(1));
        let mut call = request(http::Method::POST, "/up", body::boxed(Failing(false)));
        call.headers_mut()
            .insert("content-length", http::HeaderValue::from_static("100"));
        let answer = tokio::time::timeout(Duration::from_secs(10), pool.send(address, call, 65536))
            .await
            .expect("the exchange ends when the caller's body fails");
        assert!(matches!(answer, Err(ProxyError::Reset(_))), "{answer:?}");
        pool.close().await;
    }
}
