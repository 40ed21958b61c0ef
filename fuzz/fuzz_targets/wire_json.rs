//! The other bodies that cross between services (SPEC §3): whatever parses serialises and
//! parses back to the same value, and the ones holding credentials never print them in `Debug`
//! (what a `tracing` field would show). The first byte picks the type, the rest is its JSON.
#![no_main]

use berth_fuzz::assert_round_trip;
use berth_shared::wire::agent::{AgentDeployRequest, AgentStopQuery, RegistryAuth};
use berth_shared::wire::{
    Capacity, JobPayload, JobResult, JoinRequest, NodeApp, NodeHeartbeat, NodeJoined, Resources,
    VolumeSpec,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn check<T: Serialize + DeserializeOwned + std::fmt::Debug>(json: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(json).ok()?;
    assert_round_trip(&value);
    Some(value)
}

/// `Debug` of `shown` does not hold `secret` (as `Debug` quotes it), unless another field holds
/// the same text. Only secrets of `A-Z a-z 0-9 - _ . /` are looked for: their quoted form can only
/// be a whole string field of the output, never a piece of its punctuation.
fn hides(shown: &impl std::fmt::Debug, secret: &str, others: &[&str]) {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if secret.is_empty() || !secret.chars().all(plain) {
        return;
    }
    let quoted = format!("{secret:?}");
    let elsewhere =
        others.iter().any(|o| format!("{o:?}").contains(&quoted)) || "[redacted]".contains(secret);
    let printed = format!("{shown:?}");
    assert!(
        elsewhere || !printed.contains(&quoted),
        "{secret:?} is printed: {printed}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    match which % 10 {
        0 => {
            check::<NodeHeartbeat>(json);
        }
        1 => {
            check::<JoinRequest>(json);
        }
        2 => {
            if let Some(joined) = check::<NodeJoined>(json) {
                hides(&joined, &joined.credential, &[&joined.node_id]);
            }
        }
        3 => {
            if let Some(auth) = check::<RegistryAuth>(json) {
                let server = auth.server_address.as_deref().unwrap_or("");
                hides(&auth, &auth.password, &[&auth.username, server]);
            }
        }
        4 => {
            if let Some(req) = check::<AgentDeployRequest>(json) {
                let mut others: Vec<&str> = vec![&req.job_id, &req.app_id, &req.image];
                others.extend(req.env.keys().map(String::as_str));
                others.extend(req.health_check_path.as_deref());
                others.extend(req.user.as_deref());
                others.extend(
                    req.volumes
                        .iter()
                        .flat_map(|v| [v.name.as_str(), v.mount_path.as_str()]),
                );
                if let Some(auth) = &req.registry_auth {
                    others.push(&auth.username);
                    others.extend(auth.server_address.as_deref());
                    hides(&req, &auth.password, &others);
                }
                for value in req.env.values() {
                    hides(&req, value, &others);
                }
            }
        }
        5 => {
            check::<AgentStopQuery>(json);
        }
        6 => {
            check::<JobPayload>(json);
        }
        7 => {
            check::<Resources>(json);
            check::<Capacity>(json);
        }
        8 => {
            check::<VolumeSpec>(json);
            check::<NodeApp>(json);
        }
        _ => {
            check::<JobResult>(json);
        }
    }
});
