//! Sealed secrets (`berth_shared::sealed`): a sealed value opens to its plaintext for its own
//! context only; changed in any way it never opens; text that was not sealed under the key
//! (a forgery, whatever its shape) never opens; `BERTH_SECRET_KEY` parsing accepts only 32-byte
//! keys and `Debug` never shows them; a fingerprint matches only its own data.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use berth_shared::sealed::{SealError, SealedEnv, SealingKeys};
use libfuzzer_sys::fuzz_target;

/// Two fixed keys (the fuzzer's inputs must replay the same way every time).
const KEY_A: &str = "qwPhfMwTeSSnS8XRtXTTLOdJCdubx0Vl3J4phY2JOEw=";
const KEY_B: &str = "7l9S5VYz0yMiHJYcXc6k7d0cv7C2r2vEJtuaS1ubBks=";
static KEYS: LazyLock<SealingKeys> = LazyLock::new(|| SealingKeys::parse(KEY_A).unwrap());
static ROTATED: LazyLock<SealingKeys> =
    LazyLock::new(|| SealingKeys::parse(&format!("{KEY_B},{KEY_A}")).unwrap());
static OTHER: LazyLock<SealingKeys> = LazyLock::new(|| SealingKeys::parse(KEY_B).unwrap());

/// One change to a sealed text.
#[derive(Arbitrary, Debug)]
enum Edit {
    Flip { at: u16, bit: u8 },
    Insert { at: u16, byte: u8 },
    Remove { at: u16 },
    Truncate { len: u16 },
    Append { byte: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    plaintext: &'a [u8],
    context: &'a str,
    other_context: &'a str,
    edits: Vec<Edit>,
    forged: &'a str,
    env: BTreeMap<String, String>,
    key_text: &'a str,
}

fn edit(text: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let at = |i: u16, len: usize| usize::from(i) % len.max(1);
        match *e {
            Edit::Flip { at: i, bit } if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes[i] ^= 1 << (bit % 8);
            }
            Edit::Insert { at: i, byte } => {
                let i = at(i, bytes.len() + 1);
                bytes.insert(i, byte);
            }
            Edit::Remove { at: i } if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes.remove(i);
            }
            Edit::Truncate { len } => bytes.truncate(usize::from(len)),
            Edit::Append { byte } => bytes.push(byte),
            _ => {}
        }
    }
    bytes
}

fuzz_target!(|input: Input| {
    let keys = &*KEYS;
    let sealed = keys.seal(input.plaintext, input.context);
    assert_eq!(
        keys.open(&sealed, input.context).as_deref(),
        Ok(input.plaintext)
    );
    assert_eq!(
        ROTATED.open(&sealed, input.context).as_deref(),
        Ok(input.plaintext)
    );
    assert!(ROTATED.is_stale(&sealed) && !keys.is_stale(&sealed));
    assert!(matches!(
        OTHER.open(&sealed, input.context),
        Err(SealError::UnknownKey(_))
    ));
    if input.other_context != input.context {
        assert_eq!(
            keys.open(&sealed, input.other_context),
            Err(SealError::Corrupt)
        );
    }
    // Changed in any way, it does not open.
    let changed = edit(&sealed, &input.edits);
    if let Ok(changed) = String::from_utf8(changed) {
        if changed != sealed {
            assert!(
                keys.open(&changed, input.context).is_err(),
                "{changed:?} opened"
            );
        }
    }
    // Text not sealed under the key never opens, even in the sealed shape with its key id.
    assert!(keys.open(input.forged, input.context).is_err());
    let shaped = format!("berth-sealed:v1:{}:{}", keys.current_id(), input.forged);
    assert!(
        keys.open(&shaped, input.context).is_err(),
        "{shaped:?} opened"
    );

    // A sealed environment opens for its app only; changed, it does not open (but for the
    // empty text and a JSON object, which are read as unsealed rows from before sealing).
    let env = SealedEnv::seal(keys, &input.env, input.context);
    assert_eq!(env.open(keys, input.context).as_ref(), Ok(&input.env));
    if !input.env.is_empty() {
        assert!(!env.as_stored().contains('{'));
        if input.other_context != input.context {
            assert!(env.open(keys, input.other_context).is_err());
        }
        if let Ok(changed) = String::from_utf8(edit(env.as_stored(), &input.edits)) {
            let legacy = changed.is_empty() || changed.starts_with('{');
            if changed != env.as_stored() && !legacy {
                let opened = SealedEnv::from_stored(changed.clone()).open(keys, input.context);
                assert!(opened.is_err(), "{changed:?} opened");
            }
        }
    }

    // Keys: only 32-byte base64 keys are taken, and Debug shows none of them.
    if let Ok(parsed) = SealingKeys::parse(input.key_text) {
        let shown = format!("{parsed:?}");
        for part in input
            .key_text
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            assert_eq!(part.len(), 44, "{part:?} taken as a key");
            assert!(!shown.contains(part), "{shown}");
        }
        let fp = parsed.fingerprint(input.plaintext);
        assert!(parsed.fingerprint_matches(input.plaintext, &fp));
        assert!(!keys.fingerprint_matches(input.plaintext, &fp) || input.key_text.contains(KEY_A));
    }
    let fp = keys.fingerprint(input.plaintext);
    let changed = edit(&fp, &input.edits);
    if changed != fp.as_bytes() {
        assert!(!keys.fingerprint_matches(input.plaintext, &String::from_utf8_lossy(&changed)));
    }
});
