//! The agent's own HTTP/1.1 server for the ports local apps call (decision 92), beside the
//! own HTTP/2 server: hyper's HTTP/1.1 dispatcher and its second copy of each request head
//! cost a proxied request more distinct code than haproxy runs for the whole request
//! (decision 71). Requests it does not take as they stand go to hyper's server, connection and
//! all, from their first byte.
//! - [`answer_head`]: an answer's head and the framing of its body, by hyper's server's rules;
//! - [`request_body`]: a request's body, fed from the socket as the call reads it;
//! - [`rewound`]: a connection with what was read of it put back, for hyper's server;
//! - [`server`]: one connection: heads read, calls polled inline, answers written.

pub mod answer_head;
pub mod request_body;
pub mod rewound;
pub mod server;
