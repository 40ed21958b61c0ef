//! App ids and node ids: accepted exactly when they match their documented grammar, the same
//! through `parse` and through serde, and they round-trip.
#![no_main]

use berth_fuzz::{assert_round_trip, assert_short_message, dns_label_grammar, name_grammar};
use berth_shared::ids::{is_dns_label, is_name, AppId, NodeId};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let app = AppId::parse(text);
    assert_eq!(app.is_ok(), dns_label_grammar(text), "AppId {text:?}");
    assert_eq!(is_dns_label(text), app.is_ok());
    let via_serde = serde_json::from_value::<AppId>(Value::String(text.to_owned()));
    assert_eq!(
        via_serde.is_ok(),
        app.is_ok(),
        "serde and parse disagree on {text:?}"
    );
    match app {
        Ok(id) => {
            assert_eq!(id.as_str(), text);
            assert_round_trip(&id);
            // It becomes a host name `{appId}.{domain}` and a path segment as it is.
            assert!(!text.contains(['.', '/', '%', '_']) && text.is_ascii());
        }
        Err(e) => assert_short_message(&e.0),
    }

    let node = NodeId::parse(text);
    assert_eq!(node.is_ok(), name_grammar(text), "NodeId {text:?}");
    assert_eq!(is_name(text), node.is_ok());
    match node {
        Ok(id) => {
            assert_eq!(id.as_str(), text);
            assert_round_trip(&id);
        }
        Err(e) => assert_short_message(&e.0),
    }
});
