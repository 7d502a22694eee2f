# Trellis enrollment protocol, version 1: a node joining its org, renewing its certificate,
# and fetching the authority's newest trust snapshot.
#
# Transport: QUIC, ALPN "trellis-enroll/1", TLS 1.3 authenticated by the authority's
# certificate (issued by the org CA). A joining node has no certificate yet: it pins the
# SHA-256 fingerprint of the org CA from its join string and refuses the handshake unless
# the authority presents a chain to exactly that CA. Renewal and snapshot fetches present
# the node's current certificate as a TLS client certificate.
#
# One bidirectional stream per request. Each message is one Cap'n Proto message in the
# standard serialization (segment table), preceded by its length as a little-endian UInt32;
# a receiver refuses a frame longer than 1 MiB. The client sends one EnrollRequest; the
# authority answers with one EnrollResponse, or, for a join that waits for an operator, with
# "pending" followed by the final answer on the same stream.
#
# Prose description: docs/protocol.md ("Enrollment"). Evolution rules as peering.capnp.

@0xbe9476d005ede36f;

struct Fact {
  # One fact a node reports about itself (hostname, os, arch, version).
  key @0 :Text;
  value @1 :Text;
}

struct JoinRequest {
  token @0 :Text;
  # The join token, "ID.SECRET" (never logged; the authority stores only its hash).

  name @1 :Text;
  # Requested node name (a DNS label); the node id becomes "org/name".

  csr @2 :Data;
  # PKCS#10 certificate signing request, DER, ECDSA P-384, signed by the node's new key.
  # Only its public key is used; the authority decides every certificate field.

  facts @3 :List(Fact);
  # Hostname, OS, architecture, software version: shown to the approving operator.

  capabilities @4 :List(Text);
  # What the node supports (for example "peering/1"): shown to the operator, recorded.

  roles @5 :List(Text);
  # Roles the node asks for; must be within the token's scope. Empty: the token's roles.
}

struct RenewRequest {
  # Sent with the node's current certificate as TLS client certificate.
  csr @0 :Data;
  # CSR for the same key as the current certificate.
}

struct SnapshotRequest {
  # Sent with the node's current certificate as TLS client certificate.
  haveVersion @0 :UInt64;
  # The version the node holds (0: none); the answer is empty when nothing is newer.

  address @1 :Text;
  # Where the node accepts peering sessions ("IP:PORT"), for the org's node directory in
  # the trust snapshot. Empty: the node is not listed (it does not take part in peer
  # selection). The authority records it for the certificate's node only.

  role @2 :Text;
  # The node's selection role ("default", "relay", "thin"); empty means "default".
}

struct EnrollRequest {
  union {
    join @0 :JoinRequest;
    renew @1 :RenewRequest;
    snapshot @2 :SnapshotRequest;
    subscribe @3 :SnapshotRequest;
    # Keeps the stream open: the authority answers with a `snapshot` response for every
    # version newer than `haveVersion`, as soon as it is published (revocations reach the
    # node in well under a second), until either side closes.
  }
}

struct Issued {
  # A certificate issued on approval or renewal.
  nodeId @0 :Text;
  certificate @1 :Data;
  # The node's certificate, DER.
  caCertificate @2 :Data;
  # The org CA certificate, DER.
  snapshot @3 :Data;
  # The newest trust snapshot (an encoded SignedEnvelope), empty if none.
}

struct Pending {
  # The join request is waiting for an operator; the final answer follows on this stream.
  requestId @0 :Text;
  nodeId @1 :Text;
}

enum ErrorCode {
  badRequest @0;      # malformed request, bad name, bad CSR
  invalidToken @1;    # unknown token id or wrong secret (indistinguishable on purpose)
  tokenExpired @2;
  tokenSpent @3;      # no uses left
  tokenRevoked @4;
  rateLimited @5;     # too many failed attempts from this source; retry later
  scope @6;           # roles asked for are outside the token's scope
  nameTaken @7;       # the node id belongs to another key, or was revoked
  rejected @8;        # an operator rejected the join request
  revoked @9;         # the node's certificate or node id is revoked
  unauthenticated @10; # a renewal or snapshot request without a valid client certificate
  timedOut @11;       # nobody decided the join request in time
  internal @12;       # the authority failed; nothing was changed
}

struct EnrollError {
  code @0 :ErrorCode;
  message @1 :Text;
  # One line for the operator of the node.
}

struct EnrollResponse {
  union {
    pending @0 :Pending;
    issued @1 :Issued;
    error @2 :EnrollError;
    snapshot @3 :Data;
    # Answer to SnapshotRequest: an encoded SignedEnvelope, or empty when not newer.
  }
}
