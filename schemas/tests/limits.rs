//! Hostile input is an `Err`, never a panic, under `reader_options()`.
//!
//! Some messages here are written word by word, since the point is bytes a well-behaved
//! builder never produces.

use capnp::message::{Builder, ReaderOptions};
use capnp::{serialize, ErrorKind};
use trellis_schemas::peering_capnp::{path_hop, peer_message, update_batch, CloseReason};
use trellis_schemas::{
    reader_options, MAX_ATTRIBUTE_SETS, MAX_BATCH_ENTRIES, MAX_BATCH_WITHDRAWALS,
    MAX_MESSAGE_BYTES, NESTING_LIMIT, TRAVERSAL_LIMIT_WORDS,
};

/// Frames one segment, given as words, the way `capnp::serialize` does.
fn frame(words: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + words.len() * 8);
    bytes.extend_from_slice(&0u32.to_le_bytes()); // segment count - 1
    bytes.extend_from_slice(&u32::try_from(words.len()).unwrap().to_le_bytes());
    for word in words {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes
}

/// A struct pointer to the next word, with no data words and one pointer.
const STRUCT_PTR_NEXT_WORD_0D_1P: u64 = 1 << 48;

/// A list pointer: `offset` words after the pointer's own word, element size code, count.
fn list_ptr(offset: u32, size_code: u64, count: u64) -> u64 {
    assert!(offset < 1 << 29);
    u64::from((offset << 2) | 1) | (((count << 3) | size_code) << 32)
}
const ELEMENT_BYTE: u64 = 2;
const ELEMENT_POINTER: u64 = 6;

/// `depth` structs, each holding the next in its only pointer.
fn nested_chain(depth: usize) -> Vec<u8> {
    let mut words = vec![STRUCT_PTR_NEXT_WORD_0D_1P; depth];
    words.push(0);
    frame(&words)
}

fn walk(bytes: &[u8], options: ReaderOptions) -> capnp::Result<u64> {
    let message = serialize::read_message(&mut &bytes[..], options)?;
    let root = message.get_root::<capnp::any_pointer::Reader>()?;
    Ok(root.target_size()?.word_count)
}

#[test]
fn nesting_past_the_limit_is_an_error() {
    let shallow = usize::try_from(NESTING_LIMIT).unwrap() - 2;
    assert!(walk(&nested_chain(shallow), reader_options()).is_ok());

    let deep = nested_chain(usize::try_from(NESTING_LIMIT).unwrap() + 4);
    let err = walk(&deep, reader_options()).unwrap_err();
    assert!(
        matches!(
            err.kind,
            ErrorKind::MessageIsTooDeeplyNested
                | ErrorKind::MessageIsTooDeeplyNestedOrContainsCycles
        ),
        "unexpected error: {err}"
    );
    // The same bytes pass capnp's default limit (64): the protocol's limit is in force.
    assert!(walk(&deep, ReaderOptions::new()).is_ok());

    let very_deep = nested_chain(100_000);
    assert!(walk(&very_deep, reader_options()).is_err());
}

#[test]
fn segment_table_past_the_traversal_limit_is_rejected_before_reading() {
    // Announces one segment larger than the limit, then ends: must fail on the header alone.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0u32.to_le_bytes());
    let words = u32::try_from(TRAVERSAL_LIMIT_WORDS + 1).unwrap();
    bytes.extend_from_slice(&words.to_le_bytes());
    bytes.extend_from_slice(&[0; 64]);
    let Err(err) = serialize::read_message(&mut &bytes[..], reader_options()) else {
        panic!("an oversized segment table was accepted");
    };
    assert!(
        matches!(err.kind, ErrorKind::MessageTooLarge(_)),
        "unexpected error: {err}"
    );
}

#[test]
fn aliased_pointers_hit_the_traversal_limit() {
    // An UpdateBatch whose withdrawals are 2000 pointers to the same 64 KiB text: about
    // 80 KiB on the wire, 128 MiB if read naively.
    const COUNT: u32 = 2000;
    const TEXT_WORDS: u32 = 8192;
    let mut words = vec![
        3 << 48, // root: struct right after, 0 data words, 3 pointers
        0,       // attributeSets
        0,       // announcements
        list_ptr(0, ELEMENT_POINTER, u64::from(COUNT)), // withdrawals, right after
    ];
    let text_start = u32::try_from(words.len()).unwrap() + COUNT;
    for _ in 0..COUNT {
        let here = u32::try_from(words.len()).unwrap();
        words.push(list_ptr(
            text_start - here - 1,
            ELEMENT_BYTE,
            u64::from(TEXT_WORDS) * 8,
        ));
    }
    // Text: 'a' bytes, NUL-terminated.
    words.extend(std::iter::repeat_n(
        0x6161_6161_6161_6161,
        TEXT_WORDS as usize - 1,
    ));
    words.push(0x0061_6161_6161_6161);
    let bytes = frame(&words);
    assert!(bytes.len() < MAX_MESSAGE_BYTES);
    assert!(COUNT as usize <= MAX_BATCH_WITHDRAWALS);

    let message = serialize::read_message(&mut &bytes[..], reader_options()).unwrap();
    let batch = message.get_root::<update_batch::Reader>().unwrap();
    let withdrawals = batch.get_withdrawals().unwrap();
    assert_eq!(withdrawals.len(), COUNT);
    let mut read = 0usize;
    let mut failure = None;
    for text in withdrawals {
        match text {
            Ok(t) => read += t.len(),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("the traversal limit must stop the reads");
    assert!(
        matches!(err.kind, ErrorKind::ReadLimitExceeded),
        "unexpected error: {err}"
    );
    assert!(read <= TRAVERSAL_LIMIT_WORDS * 8, "read {read} bytes");
    assert!(read > 0);
}

#[test]
fn unknown_enumerant_is_an_error() {
    let mut message = Builder::new_default();
    let mut close = message.init_root::<peer_message::Builder>().init_close();
    close.set_reason(CloseReason::PolicyViolation);
    close.set_message("x");
    let mut bytes = serialize::write_message_to_words(&message);

    // Frame (8) + root pointer (8) + PeerMessage data word (8) + its pointer (8): then the
    // SessionClose data word, whose first two bytes are the reason.
    let reason_at = 32;
    assert_eq!(
        u16::from_le_bytes([bytes[reason_at], bytes[reason_at + 1]]),
        CloseReason::PolicyViolation as u16
    );
    bytes[reason_at..reason_at + 2].copy_from_slice(&999u16.to_le_bytes());

    let reader = serialize::read_message(&mut &bytes[..], reader_options()).unwrap();
    let root = reader.get_root::<peer_message::Reader>().unwrap();
    let peer_message::Which::Close(close) = root.which().unwrap() else {
        panic!("expected a close");
    };
    let close = close.unwrap();
    assert!(matches!(close.get_reason(), Err(capnp::NotInSchema(999))));
    assert_eq!(close.get_message().unwrap(), "x");
}

#[test]
fn a_full_batch_fits_the_limits() {
    // Every limit at once: the most attribute sets (8 hops each) and the most entries.
    let mut message = Builder::new_default();
    let mut batch = message.init_root::<update_batch::Builder>();
    let sets_len = u32::try_from(MAX_ATTRIBUTE_SETS).unwrap();
    let mut sets = batch.reborrow().init_attribute_sets(sets_len);
    for s in 0..sets_len {
        let mut set = sets.reborrow().get(s);
        set.set_origin(format!("org-{s:04}/origin").as_str());
        let mut path = set.init_path(8);
        for i in 0..8 {
            path.reborrow()
                .get(i)
                .set_org(format!("org-{:04}", s + i).as_str());
        }
    }
    let withdrawals_len = 1_000;
    let announcements_len = u32::try_from(MAX_BATCH_ENTRIES).unwrap() - withdrawals_len;
    let mut announcements = batch.reborrow().init_announcements(announcements_len);
    for i in 0..announcements_len {
        let mut a = announcements.reborrow().get(i);
        a.set_service(format!("service-{i:05}.team.eu.acme").as_str());
        a.set_attr_index(i % sets_len);
    }
    let mut withdrawals = batch.init_withdrawals(withdrawals_len);
    for i in 0..withdrawals_len {
        withdrawals.set(i, format!("gone-{i:05}.team.eu.acme").as_str());
    }
    let bytes = serialize::write_message_to_words(&message);
    // Far below the message limit, which leaves room for snapshots.
    assert!(bytes.len() < MAX_MESSAGE_BYTES / 8, "{} bytes", bytes.len());

    let reader = serialize::read_message(&mut &bytes[..], reader_options()).unwrap();
    let batch = reader.get_root::<update_batch::Reader>().unwrap();
    // Read everything twice, as a validate-then-apply receiver does.
    for _ in 0..2 {
        let mut hops = 0;
        for set in batch.get_attribute_sets().unwrap() {
            for hop in set.get_path().unwrap() {
                assert!(matches!(hop.which().unwrap(), path_hop::Which::Org(Ok(_))));
                hops += 1;
            }
        }
        assert_eq!(hops, 8 * MAX_ATTRIBUTE_SETS);
        let mut entries = 0;
        for a in batch.get_announcements().unwrap() {
            assert!(!a.get_service().unwrap().is_empty());
            entries += 1;
        }
        for w in batch.get_withdrawals().unwrap() {
            assert!(!w.unwrap().is_empty());
            entries += 1;
        }
        assert_eq!(entries, MAX_BATCH_ENTRIES);
    }
}
