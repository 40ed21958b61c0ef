//! Environment variables, plain and secret: accepted exactly when the documented limits hold
//! (names `[A-Za-z_][A-Za-z0-9_]*`, values without NUL, the count and size bounds), and every
//! accepted pair reads back unchanged from the engine's `NAME=value` form.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use berth_fuzz::{assert_short_message, env_name_grammar};
use berth_shared::wire::{check_container, limits, ContainerInput, CreateJobRequest, Resources};
use libfuzzer_sys::fuzz_target;

/// One variable: its value (and with `long_name` its name) is repeated `repeat` times, so the
/// size limits are in reach.
#[derive(Arbitrary, Debug)]
struct Var {
    name: String,
    value: String,
    repeat: u16,
    long_name: bool,
    secret: bool,
}

fuzz_target!(|vars: Vec<Var>| {
    let (mut plain, mut secret) = (BTreeMap::new(), BTreeMap::new());
    for v in vars {
        let times = usize::from(v.repeat % 2048).max(1);
        let name = if v.long_name {
            v.name.repeat(times)
        } else {
            v.name
        };
        let value = v.value.repeat(times);
        if v.secret {
            secret.insert(name, value);
        } else {
            plain.insert(name, value);
        }
    }
    let all = || plain.iter().chain(secret.iter());
    let expected = plain.len() + secret.len() <= limits::MAX_ENV
        && all().all(|(k, v)| {
            env_name_grammar(k) && v.len() <= limits::MAX_ENV_VALUE && !v.contains('\0')
        })
        && all().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= limits::MAX_ENV_BYTES;
    let checked = check_container(&ContainerInput {
        image: None,
        env: &[&plain, &secret],
        container_port: 8080,
        health_check_path: None,
        resources: &Resources::default(),
        volumes: &[],
    });
    assert_eq!(checked.is_ok(), expected, "{checked:?}");
    if let Err(e) = &checked {
        assert_short_message(e);
    }
    for (k, v) in all().filter(|_| expected) {
        let entry = format!("{k}={v}");
        assert_eq!(entry.split_once('='), Some((k.as_str(), v.as_str())));
    }

    // Through a whole job: a name in both maps is refused, else the same verdict.
    let both = plain.keys().any(|k| secret.contains_key(k));
    let job = CreateJobRequest {
        app_id: "demo".into(),
        image: Some("127.0.0.1:5000/demo:v1".into()),
        env: plain.clone(),
        secret_env: secret.clone(),
        ..Default::default()
    }
    .validate();
    match job {
        Ok(valid) => {
            assert!(expected && !both);
            assert_eq!(valid.payload.env, plain);
            assert_eq!(valid.secret_env, secret);
            let names: Vec<&String> = secret.keys().collect();
            assert_eq!(
                valid.payload.secret_env_names.iter().collect::<Vec<_>>(),
                names
            );
        }
        Err(e) => {
            assert!(!expected || both, "{e}");
            assert_short_message(&e);
        }
    }
});
