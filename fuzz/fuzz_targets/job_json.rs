//! A whole `POST /deploy/jobs` body, as the control plane reads it: a request that parses and
//! validates has an app id of the grammar, deployable volumes, a build that stays in its clone,
//! secret values apart from the stored payload; it round-trips through JSON and validates again
//! to the same job, and its stored payload reads back as it was written.
#![no_main]

use berth_fuzz::{
    assert_build_safe, assert_round_trip, assert_same_json, assert_short_message,
    assert_user_plain, assert_volumes_deployable, dns_label_grammar, env_name_grammar,
};
use berth_shared::wire::{CreateJobRequest, JobKind, JobPayload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<CreateJobRequest>(data) else {
        return;
    };
    let valid = match request.clone().validate() {
        Ok(valid) => valid,
        Err(e) => return assert_short_message(&e),
    };
    assert!(dns_label_grammar(valid.app_id.as_str()));
    let p = &valid.payload;
    assert_volumes_deployable(&p.volumes);
    if let Some(build) = &p.build {
        assert_build_safe(build);
    }
    if let Some(user) = &p.user {
        assert_user_plain(user);
    }
    assert!(p.container_port != 0);
    match valid.kind {
        JobKind::Deploy => assert!(p.image.is_some() != p.build.is_some()),
        JobKind::Stop => assert!(p.image.is_none() && p.build.is_none()),
    }
    for name in p.env.keys().chain(valid.secret_env.keys()) {
        assert!(env_name_grammar(name), "{name:?}");
    }
    // Secret values stay out of the stored payload: it holds their names only.
    assert!(valid.secret_env.keys().all(|k| !p.env.contains_key(k)));
    assert_eq!(
        p.secret_env_names,
        valid.secret_env.keys().cloned().collect::<Vec<_>>()
    );

    // What is stored reads back the same; the request sent again is the same job.
    let _: JobPayload = assert_round_trip(p);
    let again = assert_round_trip(&request)
        .validate()
        .unwrap_or_else(|e| panic!("refused when sent again: {e}"));
    assert_eq!(again.app_id, valid.app_id);
    assert_eq!(again.kind, valid.kind);
    assert_eq!(again.secret_env, valid.secret_env);
    assert_same_json(&again.payload, &valid.payload);
});
