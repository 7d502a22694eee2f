//! Cap'n Proto encoding of enrollment messages, with every limit checked on decode.

use capnp::message::Builder;
use trellis_schemas::enrollment_capnp::{enroll_request, enroll_response, ErrorCode as WireCode};

use super::{
    ErrorCode, IssuedCert, JoinRequest, Listing, Request, Response, WireError, MAX_CSR_BYTES,
    MAX_ITEM_LEN, MAX_LIST, MAX_TOKEN_LEN,
};

fn bad(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

fn read_root<T>(
    bytes: &[u8],
    read: impl FnOnce(capnp::message::Reader<capnp::serialize::OwnedSegments>) -> Result<T, WireError>,
) -> Result<T, WireError> {
    let mut slice = bytes;
    let message = capnp::serialize::read_message(&mut slice, trellis_schemas::reader_options())
        .map_err(bad)?;
    if !slice.is_empty() {
        return Err(bad("trailing bytes after the message"));
    }
    read(message)
}

fn text(
    t: capnp::Result<capnp::text::Reader<'_>>,
    max: usize,
    what: &str,
) -> Result<String, WireError> {
    let t = t.map_err(bad)?;
    if t.len() > max {
        return Err(bad(format!("{what} longer than {max} bytes")));
    }
    t.to_string().map_err(bad)
}

fn text_list(
    list: capnp::Result<capnp::text_list::Reader<'_>>,
    what: &str,
) -> Result<Vec<String>, WireError> {
    let list = list.map_err(bad)?;
    if list.len() as usize > MAX_LIST {
        return Err(bad(format!("more than {MAX_LIST} {what}")));
    }
    list.iter().map(|t| text(t, MAX_ITEM_LEN, what)).collect()
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Encodes a request.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut message = Builder::new_default();
    let root = message.init_root::<enroll_request::Builder>();
    match request {
        Request::Join(join) => {
            let mut b = root.init_join();
            b.set_token(join.token.as_str());
            b.set_name(join.name.as_str());
            b.set_csr(&join.csr);
            let mut facts = b.reborrow().init_facts(len32(join.facts.len()));
            for (i, (k, v)) in join.facts.iter().enumerate() {
                let mut f = facts.reborrow().get(len32(i));
                f.set_key(k.as_str());
                f.set_value(v.as_str());
            }
            let mut caps = b
                .reborrow()
                .init_capabilities(len32(join.capabilities.len()));
            for (i, c) in join.capabilities.iter().enumerate() {
                caps.set(len32(i), c.as_str());
            }
            let mut roles = b.init_roles(len32(join.roles.len()));
            for (i, r) in join.roles.iter().enumerate() {
                roles.set(len32(i), r.as_str());
            }
        }
        Request::Renew { csr } => root.init_renew().set_csr(csr),
        Request::Snapshot { have_version } => root.init_snapshot().set_have_version(*have_version),
        Request::Subscribe {
            have_version,
            listing,
        } => {
            let mut b = root.init_subscribe();
            b.set_have_version(*have_version);
            if let Some(listing) = listing {
                b.set_address(listing.address.as_str());
                b.set_role(listing.role.as_str());
            }
        }
    }
    capnp::serialize::write_message_to_words(&message)
}

/// Decodes a request, enforcing the limits of [`super`].
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    read_root(bytes, |message| {
        let root = message.get_root::<enroll_request::Reader>().map_err(bad)?;
        match root.which().map_err(bad)? {
            enroll_request::Join(join) => {
                let join = join.map_err(bad)?;
                let csr = join.get_csr().map_err(bad)?;
                if csr.len() > MAX_CSR_BYTES {
                    return Err(bad("CSR too large"));
                }
                let facts = join.get_facts().map_err(bad)?;
                if facts.len() as usize > MAX_LIST {
                    return Err(bad(format!("more than {MAX_LIST} facts")));
                }
                let facts = facts
                    .iter()
                    .map(|f| {
                        Ok((
                            text(f.get_key(), MAX_ITEM_LEN, "fact")?,
                            text(f.get_value(), MAX_ITEM_LEN, "fact")?,
                        ))
                    })
                    .collect::<Result<_, WireError>>()?;
                Ok(Request::Join(JoinRequest {
                    token: text(join.get_token(), MAX_TOKEN_LEN, "token")?,
                    name: text(join.get_name(), 63, "name")?,
                    csr: csr.to_vec(),
                    facts,
                    capabilities: text_list(join.get_capabilities(), "capabilities")?,
                    roles: text_list(join.get_roles(), "roles")?,
                }))
            }
            enroll_request::Renew(renew) => {
                let csr = renew.map_err(bad)?.get_csr().map_err(bad)?;
                if csr.len() > MAX_CSR_BYTES {
                    return Err(bad("CSR too large"));
                }
                Ok(Request::Renew { csr: csr.to_vec() })
            }
            enroll_request::Snapshot(snapshot) => Ok(Request::Snapshot {
                have_version: snapshot.map_err(bad)?.get_have_version(),
            }),
            enroll_request::Subscribe(snapshot) => {
                let snapshot = snapshot.map_err(bad)?;
                let address = text(snapshot.get_address(), MAX_ITEM_LEN, "address")?;
                let role = text(snapshot.get_role(), MAX_ITEM_LEN, "role")?;
                Ok(Request::Subscribe {
                    have_version: snapshot.get_have_version(),
                    listing: (!address.is_empty()).then_some(Listing { address, role }),
                })
            }
        }
    })
}

fn to_wire(code: ErrorCode) -> WireCode {
    match code {
        ErrorCode::BadRequest => WireCode::BadRequest,
        ErrorCode::InvalidToken => WireCode::InvalidToken,
        ErrorCode::TokenExpired => WireCode::TokenExpired,
        ErrorCode::TokenSpent => WireCode::TokenSpent,
        ErrorCode::TokenRevoked => WireCode::TokenRevoked,
        ErrorCode::RateLimited => WireCode::RateLimited,
        ErrorCode::Scope => WireCode::Scope,
        ErrorCode::NameTaken => WireCode::NameTaken,
        ErrorCode::Rejected => WireCode::Rejected,
        ErrorCode::Revoked => WireCode::Revoked,
        ErrorCode::Unauthenticated => WireCode::Unauthenticated,
        ErrorCode::TimedOut => WireCode::TimedOut,
        ErrorCode::Internal => WireCode::Internal,
    }
}

fn from_wire(code: WireCode) -> ErrorCode {
    match code {
        WireCode::BadRequest => ErrorCode::BadRequest,
        WireCode::InvalidToken => ErrorCode::InvalidToken,
        WireCode::TokenExpired => ErrorCode::TokenExpired,
        WireCode::TokenSpent => ErrorCode::TokenSpent,
        WireCode::TokenRevoked => ErrorCode::TokenRevoked,
        WireCode::RateLimited => ErrorCode::RateLimited,
        WireCode::Scope => ErrorCode::Scope,
        WireCode::NameTaken => ErrorCode::NameTaken,
        WireCode::Rejected => ErrorCode::Rejected,
        WireCode::Revoked => ErrorCode::Revoked,
        WireCode::Unauthenticated => ErrorCode::Unauthenticated,
        WireCode::TimedOut => ErrorCode::TimedOut,
        WireCode::Internal => ErrorCode::Internal,
    }
}

/// Encodes a response.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut message = Builder::new_default();
    let root = message.init_root::<enroll_response::Builder>();
    match response {
        Response::Pending {
            request_id,
            node_id,
        } => {
            let mut p = root.init_pending();
            p.set_request_id(request_id.as_str());
            p.set_node_id(node_id.as_str());
        }
        Response::Issued(issued) => {
            let mut i = root.init_issued();
            i.set_node_id(issued.node_id.as_str());
            i.set_certificate(&issued.certificate);
            i.set_ca_certificate(&issued.ca_certificate);
            i.set_snapshot(&issued.snapshot);
        }
        Response::Error { code, message } => {
            let mut e = root.init_error();
            e.set_code(to_wire(*code));
            e.set_message(message.as_str());
        }
        Response::Snapshot(bytes) => root
            .init_snapshot(len32(bytes.len()))
            .copy_from_slice(bytes),
    }
    capnp::serialize::write_message_to_words(&message)
}

/// Decodes a response.
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    const MAX_DATA: usize = trellis_schemas::MAX_ENROLL_FRAME_BYTES;
    read_root(bytes, |message| {
        let root = message.get_root::<enroll_response::Reader>().map_err(bad)?;
        match root.which().map_err(bad)? {
            enroll_response::Pending(p) => {
                let p = p.map_err(bad)?;
                Ok(Response::Pending {
                    request_id: text(p.get_request_id(), MAX_ITEM_LEN, "request id")?,
                    node_id: text(p.get_node_id(), MAX_ITEM_LEN, "node id")?,
                })
            }
            enroll_response::Issued(i) => {
                let i = i.map_err(bad)?;
                Ok(Response::Issued(IssuedCert {
                    node_id: text(i.get_node_id(), MAX_ITEM_LEN, "node id")?,
                    certificate: i.get_certificate().map_err(bad)?.to_vec(),
                    ca_certificate: i.get_ca_certificate().map_err(bad)?.to_vec(),
                    snapshot: i.get_snapshot().map_err(bad)?.to_vec(),
                }))
            }
            enroll_response::Error(e) => {
                let e = e.map_err(bad)?;
                Ok(Response::Error {
                    code: from_wire(e.get_code().map_err(bad)?),
                    message: text(e.get_message(), 1024, "message")?,
                })
            }
            enroll_response::Snapshot(data) => {
                let data = data.map_err(bad)?;
                if data.len() > MAX_DATA {
                    return Err(bad("snapshot too large"));
                }
                Ok(Response::Snapshot(data.to_vec()))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let requests = [
            Request::Join(JoinRequest {
                token: "a.b".into(),
                name: "edge-1".into(),
                csr: vec![1, 2, 3],
                facts: vec![("os".into(), "linux".into())],
                capabilities: vec!["peering/1".into()],
                roles: vec!["relay".into()],
            }),
            Request::Renew { csr: vec![9; 40] },
            Request::Snapshot { have_version: 7 },
            Request::Subscribe {
                have_version: 9,
                listing: None,
            },
            Request::Subscribe {
                have_version: 9,
                listing: Some(Listing {
                    address: "127.0.0.1:7001".into(),
                    role: "relay".into(),
                }),
            },
        ];
        for r in requests {
            assert_eq!(decode_request(&encode_request(&r)).expect("decode"), r);
        }
        let responses = [
            Response::Pending {
                request_id: "j1".into(),
                node_id: "acme/x".into(),
            },
            Response::Issued(IssuedCert {
                node_id: "acme/x".into(),
                certificate: vec![1],
                ca_certificate: vec![2],
                snapshot: vec![],
            }),
            Response::error(ErrorCode::TokenSpent, "spent"),
            Response::Snapshot(vec![5; 16]),
        ];
        for r in responses {
            assert_eq!(decode_response(&encode_response(&r)).expect("decode"), r);
        }
    }

    #[test]
    fn limits_are_enforced_and_garbage_is_an_error() {
        let big = Request::Join(JoinRequest {
            token: "x".repeat(MAX_TOKEN_LEN + 1),
            ..JoinRequest::default()
        });
        assert!(decode_request(&encode_request(&big)).is_err());
        let many = Request::Join(JoinRequest {
            roles: vec!["r".into(); MAX_LIST + 1],
            ..JoinRequest::default()
        });
        assert!(decode_request(&encode_request(&many)).is_err());
        assert!(decode_request(&[0xff; 64]).is_err());
        assert!(decode_response(&[]).is_err());
        let mut bytes = encode_request(&Request::Snapshot { have_version: 1 });
        bytes.extend_from_slice(&[0; 8]);
        assert!(decode_request(&bytes).is_err());
    }
}
