//! DNS messages on the wire: which packets count as queries, the response skeleton, and the
//! encoding that fits a response into the size a transport allows (RFC 1035 §4.2.1, RFC 6891,
//! RFC 2181 §9). Pure functions; the transports own the sockets.

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Why a packet is not a query the server answers in full. Garbage and responses are dropped
/// and counted, never answered (answering them would let anyone aim the agent at a third
/// party); a query whose header reads but whose body does not gets FORMERR.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Malformed {
    /// Not a DNS message: not even its header reads.
    #[error("not a DNS message: {0}")]
    Decode(#[from] hickory_proto::serialize::binary::DecodeError),
    /// A response, not a query.
    #[error("a response, not a query")]
    Response,
    /// A query whose header reads but whose sections do not, such as one with two OPT records
    /// (RFC 6891 §6.1.1 asks for FORMERR). `header` is the query with its header alone, which
    /// is all the answer echoes: no longer than the query, so no amplification.
    #[error("a query that does not decode: {error}")]
    Body {
        /// The query's header, as a message with no sections.
        header: Box<Message>,
        /// Why its sections do not decode.
        error: hickory_proto::serialize::binary::DecodeError,
    },
}

/// Largest message on TCP, whose frames carry a 16-bit length.
pub(crate) const MAX_TCP_MESSAGE_BYTES: usize = u16::MAX as usize;

/// Smallest response size every client accepts over UDP (RFC 1035).
pub(crate) const MIN_UDP_MESSAGE_BYTES: u16 = 512;

/// Parses a packet as a query.
pub(crate) fn decode(packet: &[u8]) -> Result<Message, Malformed> {
    let header = Header::read(&mut BinDecoder::new(packet))?;
    if header.metadata.message_type != MessageType::Query {
        return Err(Malformed::Response);
    }
    Message::from_vec(packet).map_err(|error| {
        let mut message = Message::query();
        message.metadata = header.metadata;
        Malformed::Body {
            header: Box::new(message),
            error,
        }
    })
}

/// The response to `request` with no records yet: its id, opcode, RD and CD bits and question,
/// and an OPT record advertising `udp_payload` when the request had one.
pub(crate) fn response_to(request: &Message, udp_payload: u16) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.add_queries(request.queries.iter().cloned());
    if let Some(asked) = &request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(udp_payload.max(MIN_UDP_MESSAGE_BYTES));
        // RFC 3225 §3: the DO bit is copied into the response.
        edns.set_dnssec_ok(asked.flags().dnssec_ok);
        response.set_edns(edns);
    }
    response
}

/// The largest UDP response `request`'s client takes: what its EDNS record advertises (512
/// without one, never less), and never more than `limit` (`dns.maxUdpResponseBytes`).
pub(crate) fn udp_limit(request: &Message, limit: u16) -> usize {
    usize::from(request.max_payload().min(limit.max(MIN_UDP_MESSAGE_BYTES)))
}

/// `response` encoded in at most `limit` bytes, and whether it had to be truncated. What does not
/// fit goes in this order: the additional section first (RFC 2181 §9: dropping it needs no TC
/// bit), then every record, leaving header, question and OPT with TC set, so the client asks
/// again over TCP.
pub(crate) fn encode(
    response: &Message,
    limit: usize,
) -> Result<(Vec<u8>, bool), hickory_proto::ProtoError> {
    let bytes = response.to_vec()?;
    if bytes.len() <= limit {
        return Ok((bytes, false));
    }
    if !response.additionals.is_empty() {
        let mut without_additionals = response.clone();
        without_additionals.additionals.clear();
        let bytes = without_additionals.to_vec()?;
        if bytes.len() <= limit {
            return Ok((bytes, false));
        }
    }
    Ok((response.truncate().to_vec()?, true))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    fn request(edns_payload: Option<u16>) -> Message {
        let mut request = Message::query();
        request.add_query(Query::query(
            Name::from_ascii("big.test.").unwrap(),
            RecordType::TXT,
        ));
        if let Some(payload) = edns_payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            request.set_edns(edns);
        }
        request
    }

    fn with_records(request: &Message, answers: usize, additionals: usize) -> Message {
        let mut response = response_to(request, 1232);
        let name = Name::from_ascii("big.test.").unwrap();
        for i in 0..answers {
            let text = format!("{i:0>100}");
            response.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::TXT(TXT::new(vec![text])),
            ));
        }
        for _ in 0..additionals {
            response.add_additional(Record::from_rdata(
                name.clone(),
                60,
                RData::A(A(Ipv4Addr::LOCALHOST)),
            ));
        }
        response
    }

    #[test]
    fn a_response_copies_the_dnssec_ok_bit_it_was_asked_with() {
        let mut asked = request(Some(1232));
        if let Some(edns) = asked.edns.as_mut() {
            edns.set_dnssec_ok(true);
        }
        let answered = response_to(&asked, 1232);
        assert_eq!(answered.edns.map(|e| e.flags().dnssec_ok), Some(true));
        let plain = response_to(&request(Some(1232)), 1232);
        assert_eq!(plain.edns.map(|e| e.flags().dnssec_ok), Some(false));
        assert!(response_to(&request(None), 1232).edns.is_none());
    }

    #[test]
    fn responses_and_garbage_are_not_queries() {
        let query = request(None);
        assert!(decode(&query.to_vec().unwrap()).is_ok());
        let response = response_to(&query, 1232);
        assert!(matches!(
            decode(&response.to_vec().unwrap()),
            Err(Malformed::Response)
        ));
        assert!(matches!(
            decode(&[0x12, 0x34, 0x01]),
            Err(Malformed::Decode(_))
        ));
    }

    #[test]
    fn the_udp_limit_is_the_smaller_of_the_setting_and_the_clients_payload() {
        assert_eq!(udp_limit(&request(None), 1232), 512);
        assert_eq!(udp_limit(&request(Some(4096)), 1232), 1232);
        assert_eq!(udp_limit(&request(Some(800)), 1232), 800);
        assert_eq!(udp_limit(&request(Some(100)), 1232), 512);
    }

    #[test]
    fn a_response_that_fits_is_sent_whole() {
        let response = with_records(&request(None), 2, 1);
        let (bytes, truncated) = encode(&response, 512).unwrap();
        assert!(!truncated);
        assert_eq!(Message::from_vec(&bytes).unwrap(), response);
    }

    #[test]
    fn the_additional_section_goes_first_without_the_tc_bit() {
        let response = with_records(&request(None), 4, 20);
        let (bytes, truncated) = encode(&response, 512).unwrap();
        assert!(!truncated);
        let sent = Message::from_vec(&bytes).unwrap();
        assert_eq!(sent.answers.len(), 4);
        assert!(sent.additionals.is_empty());
        assert!(!sent.metadata.truncation);
    }

    #[test]
    fn answers_that_do_not_fit_leave_the_question_with_the_tc_bit() {
        let query = request(Some(4096));
        let response = with_records(&query, 20, 0);
        let (bytes, truncated) = encode(&response, udp_limit(&query, 1232)).unwrap();
        assert!(truncated);
        assert!(bytes.len() <= 1232);
        let sent = Message::from_vec(&bytes).unwrap();
        assert!(sent.metadata.truncation);
        assert_eq!(sent.metadata.id, query.metadata.id);
        assert!(sent.answers.is_empty());
        assert_eq!(sent.queries, query.queries);
        assert!(sent.edns.is_some());
        let (whole, truncated) = encode(&response, MAX_TCP_MESSAGE_BYTES).unwrap();
        assert!(!truncated);
        assert_eq!(Message::from_vec(&whole).unwrap().answers.len(), 20);
    }
}
