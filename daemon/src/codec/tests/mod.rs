//! Tests of the codec: batches (round trips, hostile input, fuzzing by proptest) and
//! signed manifests (sign, encode, decode, verify, and every way verification must fail).

mod batch;
mod manifest;

use trellis_routing::{NodeId, OrgId, ServiceName};
use trellis_schemas::reader_options;

use capnp::message::{Builder, HeapAllocator, Reader};
use capnp::serialize::OwnedSegments;

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

fn org(s: &str) -> OrgId {
    OrgId::new(s).expect("org id")
}

fn service(s: &str) -> ServiceName {
    ServiceName::new(s).expect("service name")
}

/// Serializes a built message and reads it back as a peer would.
fn reread(message: &Builder<HeapAllocator>) -> Reader<OwnedSegments> {
    let bytes = capnp::serialize::write_message_to_words(message);
    capnp::serialize::read_message(&mut &bytes[..], reader_options()).expect("read back")
}
