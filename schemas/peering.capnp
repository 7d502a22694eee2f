# Trellis peering protocol, version 1.
#
# The wire contract between two Trellis nodes. One QUIC bidirectional stream per connection
# (ALPN "trellis/1", mutual TLS 1.3) carries a Cap'n Proto RPC session in which each side
# exports a `PeerSession` as its bootstrap capability. `PeerMessage` is the same vocabulary
# as a single tagged value, for framing outside RPC (recorded sessions, test fixtures, logs).
#
# Prose description with limits and receiver obligations: docs/protocol.md ("Messages").
# Rust bindings: crate `trellis-schemas` (schemas/src/generated/peering_capnp.rs, committed;
# regenerate with `TRELLIS_REGEN_SCHEMAS=1 cargo test -p trellis-schemas`).
#
# Evolution rules: never renumber or remove a field, enumerant or method; add new ones with
# the next ordinal. Receivers treat an enumerant they do not know as a malformed message,
# except in `SessionOpen.capabilities` (unknown capabilities are ignored) and in
# `SessionClose.reason` (the session ends anyway).
#
# Identifiers used throughout:
#   node id   "org/name", e.g. "acme/edge-1" (org is a lowercase DNS label)
#   org id    a lowercase DNS label, e.g. "acme"
#   service   hierarchical DNS-like name, e.g. "books.acme" or the aggregate "*.eu.acme"

@0xbb0874ff6c0d35dd;

const protocolVersion :UInt16 = 1;
# Version carried in `SessionOpen.protocolVersion` by this revision of the schema.

# ---------------------------------------------------------------------------------------
# Session control

enum Capability {
  # Optional features a node supports. A feature is used on a session only if both sides
  # list it in their `SessionOpen`.

  gracefulRestart @0;
  # Keep the peer's routes, marked stale, for `gracefulRestartSecs` after the session drops,
  # and flush what is still stale at the peer's next `endOfTable`.

  originManifests @1;
  # Exchange signed origin manifests (`SignedEnvelope.kind = originManifest`).

  trustSnapshots @2;
  # Flood authority-signed trust snapshots (`SignedEnvelope.kind = trustSnapshot`).

  tableSnapshots @3;
  # Send a signed table snapshot at session start (`SignedEnvelope.kind = tableSnapshot`).

  dataPlane @4;
  # Accept data-plane connections on other streams of the same QUIC connection.

  traceContext @5;
  # Read a trace context after the names of a data-plane stream header (flag bit 0).
}

struct SessionOpen {
  # First call on a session, in both directions: each side sends its own parameters and
  # the callee answers with its own. Nothing else may be called before `open` returns.

  protocolVersion @0 :UInt16;
  # Protocol version of the sender (`protocolVersion` constant of its schema). A receiver
  # that cannot speak it closes with `unsupportedVersion`.

  nodeId @1 :Text;
  # Sender's node id, "org/name". Must equal the id in the sender's TLS certificate
  # (URI SAN trellis://org/name), else the receiver closes with `unauthorized`.

  orgId @2 :Text;
  # Sender's org id. Must equal the org part of `nodeId`.

  holdTimeSecs @3 :UInt16;
  # Proposed hold time in seconds. The session uses the smaller of the two proposals;
  # 0 disables the hold timer, otherwise the value must be at least 3 (as BGP).

  gracefulRestartSecs @4 :UInt16;
  # How long the receiver should keep this sender's routes (as stale) after the session
  # drops. Meaningful only when both sides list `gracefulRestart`; 0 means none.

  capabilities @5 :List(Capability);
  # Features the sender supports. Unknown values are ignored; duplicates are harmless.
}

enum CloseReason {
  # Why a session is being closed; the administrative and error codes of BGP NOTIFICATION,
  # adapted. Sent in `SessionClose` and recorded by both sides.

  adminShutdown @0;
  # An operator shut the session or the node down.

  holdTimerExpired @1;
  # Nothing was received from the peer within the hold time.

  sendHoldTimerExpired @2;
  # The sender could not deliver anything to the peer within the hold time (the peer is
  # not reading; as BGP's send hold timer, RFC 9687).

  malformedMessage @3;
  # A message failed to decode or validate (bad pointer, unknown enumerant, bad id, ...).

  oversizedMessage @4;
  # A message or one of its lists exceeded a protocol limit.

  maxRoutesExceeded @5;
  # The peer announced more routes than its configured max-routes limit.

  unauthorized @6;
  # The peer is not allowed: identity mismatch, untrusted CA, or policy denied it.

  revoked @7;
  # The peer's certificate or node id has been revoked.

  collisionResolved @8;
  # The two nodes dialed each other at once; this session lost the tie-break.

  unsupportedVersion @9;
  # No common protocol version.

  policyViolation @10;
  # The peer sent something its peering configuration forbids (a route leak, a service it
  # may not originate, a message kind outside the agreed capabilities, ...).

  peerUnconfigured @11;
  # The receiver has no peering configured for this peer (or it was removed).

  internalError @12;
  # The sender failed internally; the peer did nothing wrong.
}

struct SessionClose {
  # Last message on a session. After sending it the sender stops sending and closes the
  # stream; the receiver withdraws (or, under graceful restart, marks stale) the routes.

  reason @0 :CloseReason;
  # Machine-readable reason.

  message @1 :Text;
  # Human-readable detail for logs, at most 1 KiB; may be empty. Never interpreted.
}

struct Keepalive {
  # Liveness probe: any message resets the hold timer; a keepalive is sent when nothing
  # else has been sent for a third of the hold time. The callee echoes it back, so the
  # caller measures round-trip time.

  sentAtMs @0 :UInt64;
  # Caller's clock when sent, milliseconds since the Unix epoch. Echoed unchanged; only the
  # caller interprets it (clocks of the two nodes are not compared).
}

struct EndOfTable {
  # Marks the end of the initial full table after `open`: the receiver has now seen every
  # route the sender exports to it, and may flush routes still marked stale by a graceful
  # restart and count the session as converged.
}

# ---------------------------------------------------------------------------------------
# Routes

enum ProtocolHint {
  # What speaks on the service's endpoint; a hint for the data plane and for operators.

  unspecified @0;
  tcp @1;
  http @2;
  grpc @3;
}

enum Relationship {
  # Relationship over which a route entered an org (RFC 9234 roles, seen from the org).

  internal @0;
  # Originated inside the org.

  customer @1;
  # Learned from a customer org.

  peer @2;
  # Learned from a lateral peer org.

  provider @3;
  # Learned from a provider org.
}

struct PathHop {
  # One hop of a route's path.

  union {
    node @0 :Text;
    # An in-org node id, "org/name". Only on paths inside the sender's org.

    org @1 :Text;
    # A whole org, collapsed: what crosses an org border (internal topology is never
    # exported, as an AS path hides routers).
  }
}

struct PathAttributes {
  # Attributes shared by one or more announced services of an `UpdateBatch`.

  origin @0 :Text;
  # Node id of the origin: the node whose signed origin manifest must list the service.

  originSeq @1 :UInt64;
  # Version of the origin manifest the route was originated under. A route is valid only
  # against a verified manifest of this version or newer that still lists the service.

  path @2 :List(PathHop);
  # Path back to the origin, nearest hop first (the sender itself is the first hop; the
  # origin, or the origin's org, is the last). A receiver drops a route whose path contains
  # its own node id or its own org id (the route left the org and came back). Across an org
  # border the path holds only `org` hops.

  metric @3 :UInt32;
  # Sum of link costs from the sender to the origin. Saturates at 0xFFFFFFFF.

  communities @4 :List(Text);
  # Communities/tags for policy, e.g. "acme:eu" or "no-export". Ordered set: receivers
  # treat duplicates as one.

  protocol @5 :ProtocolHint;
  # Protocol the service speaks.

  learnedFrom @6 :Relationship;
  # Relationship over which the route entered the sender's org. Meaningful only between
  # nodes of the same org, so that every border node applies valley-free export (like
  # RFC 9234 Only-To-Customer); a sender sets it to `internal` on external sessions and a
  # receiver ignores it there, using the configured role of the peering instead.
}

struct Announcement {
  # One announced (or re-announced, replacing the previous) route.

  service @0 :Text;
  # Service name, e.g. "books.acme" or an aggregate "*.eu.acme".

  attrIndex @1 :UInt32;
  # Index into the batch's `attributeSets`. Out of range: malformed message.
}

struct UpdateBatch {
  # A batch of route changes from one peer, applied as a unit by the receiver: withdrawals
  # first, then announcements. Attribute sets are interned per batch, since many services
  # share one path. A sender lists each service at most once per batch.

  attributeSets @0 :List(PathAttributes);
  # Distinct attribute sets referenced by `announcements`; unreferenced sets are allowed.

  announcements @1 :List(Announcement);
  # Routes announced, each replacing the sender's previous route for that service.

  withdrawals @2 :List(Text);
  # Service names whose route from this sender is withdrawn. Withdrawing a service the
  # receiver does not hold is not an error.

  traceContext @3 :Data;
  # Optional W3C trace context of the span that sent this batch: trace id (16 bytes),
  # span id (8), flags (1). Sent only by a node that exports traces; a receiver that does
  # not understand or does not want it ignores it, and a malformed value is ignored too.
  # Observability only: it never changes how the batch is applied.
}

# ---------------------------------------------------------------------------------------
# Signed documents. Each is serialized on its own in canonical form and carried as the
# payload of a `SignedEnvelope`.

struct OriginManifest {
  # What a node originates (RPKI ROA-like), signed by the origin node's key.

  origin @0 :Text;
  # Node id of the origin; equals the envelope's `signer`.

  version @1 :UInt64;
  # Strictly increasing per origin. A receiver keeps the highest verified version and
  # rejects an older or equal one with different content.

  issuedAtMs @2 :UInt64;
  # Origin's clock at signing, milliseconds since the Unix epoch. Informational.

  services @3 :List(Text);
  # Every service the origin originates. Routes from this origin for services not listed
  # in its current manifest are invalid.
}

struct TrustSnapshot {
  # An org authority's current trust state, flooded to every node of the org through the
  # mesh so revocations arrive even when the authority is unreachable.

  org @0 :Text;
  # Org id of the authority; equals the envelope's `signer`.

  version @1 :UInt64;
  # Strictly increasing per org. Newer wins; older is rejected (anti-rollback).

  issuedAtSecs @2 :UInt64;
  # Signing time, seconds since the Unix epoch.

  expiresAtSecs @3 :UInt64;
  # After this time the snapshot is no longer authoritative and the node reports it stale.

  revokedSerials @4 :List(Data);
  # Serial numbers (big-endian bytes, as in the certificate) of revoked certificates.

  revokedNodes @5 :List(Text);
  # Node ids revoked outright (every certificate for them).

  caCertificateDer @6 :Data;
  # The org's current CA certificate, DER. A different certificate than the one trusted
  # announces a CA rollover; it must chain to or be cross-signed by the trusted CA.

  nameScopes @7 :List(NameScope);
  # Which nodes of the org may originate which of its names. Empty: every node may
  # originate every name the org owns (a name belongs to the org of its last label).

  delegations @8 :List(NameDelegation);
  # Names of this org that another org, or one node of it, may originate.

  partnerCas @9 :List(PartnerCa);
  # CA certificates the org's nodes trust for partner orgs, each for its org only, so
  # interior nodes verify partner origins and snapshots as border nodes do.

  directory @10 :List(DirectoryEntry);
  # The org's node directory: where each active node of the org listens and its
  # selection role. Nodes pick their active and warm peers among these entries
  # (docs/adr/0015-peer-selection-from-a-signed-directory.md). Revoked nodes are absent.

  tokenKeys @11 :List(TokenKey);
  # The public keys that verify the org's operator tokens (ES384 JWTs; the JWKS of the
  # org, docs/adr/0017-operator-tokens.md).

  revokedTokens @12 :List(Text);
  # Token ids (`jti`) the authority revoked that have not expired yet.
}

struct TokenKey {
  # One P-384 public key for operator tokens.

  kid @0 :Text;
  # Its key id, as the JWT header names it.

  publicKey @1 :Data;
  # Uncompressed SEC1 point: 0x04 || x || y (97 bytes).
}

struct DirectoryEntry {
  # One node of the org, as it reported itself to the authority.

  node @0 :Text;
  # Its node id (in the snapshot's org).

  address @1 :Text;
  # Where it accepts peering sessions: "IP:PORT".

  role @2 :Text;
  # Its selection role: "default", "relay" or "thin".
}

struct NameScope {
  # Narrows which names one node (or every node) of the org may originate.

  node @0 :Text;
  # A node id of the org, or `*` for every node.

  names @1 :List(Text);
  # Names (`books.acme`) or aggregates (`*.eu.acme`, covering every name below) of the org.
}

struct NameDelegation {
  # Lets another org originate some of this org's names.

  grantee @0 :Text;
  # An org id, or a node id of another org.

  names @1 :List(Text);
  # Names or aggregates of the delegating org.
}

struct PartnerCa {
  # A partner org's CA, trusted for that org only.

  org @0 :Text;
  caCertificateDer @1 :Data;
}

struct TableSnapshot {
  # The full table a node exports to one peer, signed by that node: sent at session start
  # and exportable/verifiable offline.

  node @0 :Text;
  # Node id of the exporter; equals the envelope's `signer`.

  version @1 :UInt64;
  # Increasing per exporter.

  createdAtMs @2 :UInt64;
  # Exporter's clock when the snapshot was taken, milliseconds since the Unix epoch.

  routes @3 :UpdateBatch;
  # The routes, as one batch of announcements (no withdrawals).
}

enum EnvelopeKind {
  # What a `SignedEnvelope` carries: the root struct type of its payload.

  originManifest @0;
  trustSnapshot @1;
  tableSnapshot @2;
}

enum SignatureAlgorithm {
  # Signature scheme of a `SignedEnvelope`.

  ecdsaP384Sha384 @0;
  # ECDSA over P-384 with SHA-384, signature DER-encoded (as X.509 and ES384 keys in use).
}

struct SignedEnvelope {
  # A signed document. The signature covers the domain-separated signing input
  #   "trellis-envelope-v1\0" || kind as UInt16 little-endian || payload
  # so a signature over one kind can never be replayed as another.

  kind @0 :EnvelopeKind;
  # Root struct type of `payload`.

  payload @1 :Data;
  # The signed message (`OriginManifest`, `TrustSnapshot` or `TableSnapshot`), encoded in
  # Cap'n Proto canonical form: one segment, no segment table, starting with the root
  # pointer. A receiver rejects a payload that is not canonical.

  signer @2 :Text;
  # Who signed: a node id for manifests and table snapshots, an org id (its authority)
  # for trust snapshots. Selects the verification key.

  algorithm @3 :SignatureAlgorithm;
  # Signature scheme.

  signature @4 :Data;
  # The signature.

  certificate @5 :Data;
  # Signer's X.509 certificate (DER) for node-signed documents (manifests, table
  # snapshots), so a receiver can verify a signer it has never peered with: the certificate
  # must chain to the CA trusted for the signer's org, name the signer in its URI SAN, and
  # not be revoked. Empty for trust snapshots (verified with the org CA).
}

# ---------------------------------------------------------------------------------------
# Framing and RPC

struct PeerMessage {
  # Every protocol message as one tagged value; the framing used outside RPC.

  union {
    open @0 :SessionOpen;
    close @1 :SessionClose;
    update @2 :UpdateBatch;
    endOfTable @3 :EndOfTable;
    keepalive @4 :Keepalive;
    manifest @5 :SignedEnvelope;
    # kind = originManifest
    trustSnapshot @6 :SignedEnvelope;
    # kind = trustSnapshot
    tableSnapshot @7 :SignedEnvelope;
    # kind = tableSnapshot
  }
}

interface PeerSession {
  # Exported by each side as its bootstrap capability. Each side calls the other's methods
  # to send; a call returning is the receiver's acknowledgement (flow control: a sender
  # keeps a bounded number of calls in flight). An error from any call ends the session.

  open @0 (hello :SessionOpen) -> (hello :SessionOpen);
  # Exchange session parameters; must be the first call, made once.

  update @1 (batch :UpdateBatch) -> ();
  # Deliver route changes, applied in call order.

  endOfTable @2 () -> ();
  # The initial full table has been sent.

  keepalive @3 (ka :Keepalive) -> (ka :Keepalive);
  # Liveness and RTT probe; the result echoes the argument.

  signed @4 (envelope :SignedEnvelope) -> ();
  # Deliver a signed manifest or snapshot.

  close @5 (close :SessionClose) -> ();
  # Announce the end of the session and why.
}
