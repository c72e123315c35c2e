//! An answer's head as the own HTTP/1.1 server writes it, and how its body is framed. The
//! rules are hyper's server's, which wrote every answer before (decision 92), so a client sees
//! the same bytes from either: the status line with the instance's reason phrase, a length
//! kept or added, chunked when the length is unknown, no body where RFC 9112 §6.3 allows none,
//! `connection: close` on the last answer, and a `date`.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::response::Parts;
use http::{HeaderName, Method, StatusCode};

use crate::proxy::h1_wire::digits;
use crate::proxy::headers::has_token;

/// How much of the answer's body the head lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked, ending with the last chunk (and the trailers the client may get).
    Chunked,
}

/// What the body looked like when the head was written, as hyper's server read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    /// The body has ended already.
    Ended,
    /// The body says it holds exactly this many bytes.
    Known(u64),
    /// The body's length is not known.
    Unknown,
}

/// The written head's consequences for the rest of the answer.
#[derive(Debug)]
pub struct Written {
    /// How the body goes.
    pub framing: Framing,
    /// The connection closes after this answer (`connection: close` is in the head).
    pub last: bool,
    /// Trailer fields the client may get: those the answer's `Trailer` header announced. The
    /// body's trailers are dropped without one, as hyper's server drops them.
    pub trailer_names: Option<Vec<HeaderName>>,
}

/// Why an answer's head could not be written: the connection ends without it, as hyper's
/// server ends it.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The answer's `Content-Length` lines disagree or are no number.
    #[error("the answer's Content-Length is invalid")]
    Length,
    /// A 1xx as a final answer.
    #[error("the answer's status is informational")]
    Informational,
}

/// Appends the head of an answer to a `method` request to `dst`. `keep_alive` says whether the
/// connection may carry another request; when not, the head says `connection: close`.
pub fn encode(
    parts: &Parts,
    method: &Method,
    body: BodyState,
    keep_alive: bool,
    dst: &mut Vec<u8>,
) -> Result<Written, HeadError> {
    let status = parts.status;
    if status.is_informational() {
        return Err(HeadError::Informational);
    }
    dst.reserve(64 + parts.headers.len() * 32);
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(reason) => dst.extend_from_slice(reason.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }

    let chunked_allowed = can_chunk(method, status);
    let mut framing = None;
    let mut length_written = None;
    let mut last = !keep_alive;
    let mut closes = false;
    let mut wrote_date = false;
    let mut trailer_names: Option<Vec<HeaderName>> = None;
    for (name, value) in &parts.headers {
        match *name {
            CONTENT_LENGTH => {
                match body {
                    BodyState::Ended if *method != Method::HEAD => continue,
                    BodyState::Ended | BodyState::Known(_) => {
                        if length_written.is_some() {
                            continue;
                        }
                        framing = Some(Framing::Length(match body {
                            BodyState::Known(known) => known,
                            _ => 0,
                        }));
                    }
                    BodyState::Unknown => {
                        let length = digits(value.as_bytes()).ok_or(HeadError::Length)?;
                        match length_written {
                            Some(earlier) if earlier == length => continue,
                            Some(_) => return Err(HeadError::Length),
                            None => framing = Some(Framing::Length(length)),
                        }
                    }
                }
                length_written = Some(digits(value.as_bytes()).unwrap_or(0));
            }
            // Bodies reach this server decoded: whatever coding an answer names, its bytes go
            // chunked (the call refuses codings other than chunked, decision 66).
            TRANSFER_ENCODING => {
                if chunked_allowed && framing.is_none() {
                    framing = Some(Framing::Chunked);
                    dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                }
                continue;
            }
            CONNECTION => closes |= has_token(value, "close"),
            DATE => wrote_date = true,
            TRAILER => {
                if !chunked_allowed {
                    continue;
                }
                if let Ok(text) = value.to_str() {
                    trailer_names.get_or_insert_with(Vec::new).extend(
                        text.split(',')
                            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
                    );
                }
            }
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    last |= closes;
    if !keep_alive && !closes {
        dst.extend_from_slice(b"connection: close\r\n");
    }

    let framing = match framing {
        Some(framing) => framing,
        None => match body {
            BodyState::Unknown if chunked_allowed => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            BodyState::Unknown => Framing::Length(0),
            BodyState::Ended | BodyState::Known(0) => {
                if can_have_length(status) && *method != Method::HEAD {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            BodyState::Known(length) => {
                if can_have_length(status) {
                    dst.extend_from_slice(b"content-length: ");
                    dst.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
                    dst.extend_from_slice(b"\r\n");
                    Framing::Length(length)
                } else {
                    Framing::Length(0)
                }
            }
        },
    };
    // HEAD, 204 and 304 answers end with their heads (RFC 9112 §6.3), whatever they say.
    let framing = if chunked_allowed {
        framing
    } else {
        Framing::Length(0)
    };
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        extend_with_date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    Ok(Written {
        framing,
        last,
        trailer_names: trailer_names.filter(|_| framing == Framing::Chunked),
    })
}

/// Whether an answer with `status` to `method` has a body that may be chunked: not a HEAD's,
/// a 204 or a 304.
fn can_chunk(method: &Method, status: StatusCode) -> bool {
    *method != Method::HEAD && can_have_length(status)
}

/// Whether an answer with `status` may say a length (RFC 9110 §8.6).
fn can_have_length(status: StatusCode) -> bool {
    !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

thread_local! {
    /// The IMF-fixdate of the current second, made once a second per thread.
    static DATE_NOW: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current time as an IMF-fixdate (RFC 9110 §5.6.7).
fn extend_with_date(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_NOW.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *cached = second;
            }
        }
        dst.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Response};

    fn head(
        response: Response<()>,
        method: &Method,
        body: BodyState,
        keep_alive: bool,
    ) -> (String, Written) {
        let (parts, ()) = response.into_parts();
        let mut dst = Vec::new();
        let written = encode(&parts, method, body, keep_alive, &mut dst).expect("encodes");
        let text = String::from_utf8(dst).expect("ascii");
        // The date changes; the rest is compared.
        let text = text
            .lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n");
        (text, written)
    }

    #[test]
    fn a_known_length_is_said_and_a_missing_one_goes_chunked() {
        let (text, written) = head(Response::new(()), &Method::GET, BodyState::Known(5), true);
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 5\n");
        assert_eq!(written.framing, Framing::Length(5));
        let (text, written) = head(Response::new(()), &Method::GET, BodyState::Unknown, true);
        assert_eq!(text, "HTTP/1.1 200 OK\ntransfer-encoding: chunked\n");
        assert_eq!(written.framing, Framing::Chunked);
        let (text, _) = head(Response::new(()), &Method::POST, BodyState::Ended, true);
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 0\n");
    }

    #[test]
    fn a_head_answer_keeps_its_length_and_sends_no_body() {
        let response = Response::builder()
            .header("content-length", "42")
            .body(())
            .expect("valid");
        let (text, written) = head(response, &Method::HEAD, BodyState::Ended, true);
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 42\n");
        assert_eq!(written.framing, Framing::Length(0));
        let (text, _) = head(Response::new(()), &Method::HEAD, BodyState::Ended, true);
        assert_eq!(text, "HTTP/1.1 200 OK\n");
    }

    #[test]
    fn no_content_and_not_modified_have_no_length_and_no_body() {
        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            let response = Response::builder().status(status).body(()).expect("valid");
            let (text, written) = head(response, &Method::GET, BodyState::Unknown, true);
            assert_eq!(text, format!("HTTP/1.1 {status}\n"));
            assert_eq!(written.framing, Framing::Length(0));
        }
    }

    #[test]
    fn the_reason_phrase_the_instance_gave_is_kept() {
        let mut response = Response::new(());
        response
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Thanks"));
        let (text, _) = head(response, &Method::GET, BodyState::Known(0), true);
        assert_eq!(text, "HTTP/1.1 200 Fine Thanks\ncontent-length: 0\n");
    }

    #[test]
    fn the_last_answer_says_close_once() {
        let (text, written) = head(Response::new(()), &Method::GET, BodyState::Known(0), false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\nconnection: close\ncontent-length: 0\n"
        );
        assert!(written.last);
        let response = Response::builder()
            .header("connection", "close")
            .body(())
            .expect("valid");
        let (text, written) = head(response, &Method::GET, BodyState::Known(0), true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\nconnection: close\ncontent-length: 0\n"
        );
        assert!(written.last);
    }

    #[test]
    fn lengths_that_disagree_are_refused_and_equal_ones_sent_once() {
        let mut response = Response::new(());
        let headers = response.headers_mut();
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("3"));
        let (text, written) = head(response, &Method::GET, BodyState::Unknown, true);
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 3\n");
        assert_eq!(written.framing, Framing::Length(3));
        let mut response = Response::new(());
        let headers = response.headers_mut();
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("4"));
        let (parts, ()) = response.into_parts();
        let encoded = encode(
            &parts,
            &Method::GET,
            BodyState::Unknown,
            true,
            &mut Vec::new(),
        );
        assert!(matches!(encoded, Err(HeadError::Length)));
    }

    #[test]
    fn announced_trailers_are_allowed_on_a_chunked_answer() {
        let response = Response::builder()
            .header("trailer", "grpc-status, grpc-message")
            .body(())
            .expect("valid");
        let (_, written) = head(response, &Method::POST, BodyState::Unknown, true);
        let names = written.trailer_names.expect("announced");
        assert_eq!(names, ["grpc-status", "grpc-message"]);
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let mut dst = Vec::new();
        extend_with_date(&mut dst);
        let text = String::from_utf8(dst).expect("ascii");
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }
}
