//! Random inputs against the validators every service trusts at its edge: app ids, image
//! references, environment variables, volumes, build paths and container users.
//!
//! This stands in for `cargo fuzz`, which needs a nightly toolchain (the repository pins
//! stable): each property runs a bounded loop of inputs drawn from an alphabet weighted
//! towards the characters that break parsers (separators, `..`, NUL, unicode, very long
//! runs), on a seed printed with every failure (`BERTH_RANDOM_SEED=<seed>` replays it). A loop
//! takes well under a second.

use std::collections::BTreeMap;

use berth_shared::ids::{is_dns_label, AppId};
use berth_shared::image::{named_registry, registry_host, validate_image};
use berth_shared::wire::job::check_container_user;
use berth_shared::wire::{CreateJobRequest, VolumeSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inputs per property.
const ROUNDS: usize = 10_000;

/// Pieces inputs are made of: plain characters, separators, and the sequences that have broken
/// parsers before.
const PIECES: &[&str] = &[
    "a",
    "b",
    "z",
    "0",
    "9",
    "A",
    "Z",
    "-",
    "_",
    ".",
    "/",
    ":",
    "@",
    "=",
    ",",
    " ",
    "\0",
    "\n",
    "\t",
    "..",
    "//",
    "__",
    "sha256:",
    "localhost",
    "127.0.0.1:5000",
    "é",
    "💥",
    "\u{202e}",
    "%2e",
    "\\",
];

fn seeded() -> (u64, StdRng) {
    let seed = std::env::var("BERTH_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    (seed, StdRng::seed_from_u64(seed))
}

/// A string of up to `max` pieces; now and then one very long one.
fn input(rng: &mut StdRng, max: usize) -> String {
    let pieces = if rng.gen_ratio(1, 50) {
        rng.gen_range(100..400)
    } else {
        rng.gen_range(0..=max)
    };
    (0..pieces)
        .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
        .collect()
}

fn allowed(s: &str, extra: &[u8]) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

#[test]
fn accepted_app_ids_are_dns_labels_and_refusals_echo_little() {
    let (seed, mut rng) = seeded();
    for _ in 0..ROUNDS {
        let id = input(&mut rng, 12);
        match AppId::parse(&id) {
            Ok(parsed) => {
                assert_eq!(parsed.as_str(), id, "seed {seed}");
                assert!(
                    (1..=63).contains(&id.len())
                        && allowed(&id, b"-")
                        && !id.starts_with('-')
                        && !id.ends_with('-'),
                    "seed {seed}: accepted {id:?}"
                );
            }
            Err(e) => {
                assert!(!is_dns_label(&id), "seed {seed}: refused {id:?}");
                // The message quotes at most 80 characters of what was sent (escaped, so up to ~10 bytes each).
                assert!(e.0.chars().count() < 1100, "seed {seed}: {e}");
            }
        }
    }
}

/// A reference built by the grammar: `[host[:port]/]path[:tag][@sha256:hex]`.
fn grammatical_image(rng: &mut StdRng) -> String {
    let word = |rng: &mut StdRng| -> String {
        let len = rng.gen_range(1..8);
        (0..len)
            .map(|_| b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)] as char)
            .collect()
    };
    let mut image = String::new();
    if rng.gen_bool(0.5) {
        image.push_str(&format!("{}.{}", word(rng), word(rng)));
        if rng.gen_bool(0.5) {
            image.push_str(&format!(":{}", rng.gen_range(1..65536)));
        }
        image.push('/');
    }
    let components = rng.gen_range(1..4);
    let path: Vec<String> = (0..components)
        .map(|_| {
            let sep = ["", ".", "_", "__", "-", "--"][rng.gen_range(0..6)];
            if sep.is_empty() {
                word(rng)
            } else {
                format!("{}{sep}{}", word(rng), word(rng))
            }
        })
        .collect();
    image.push_str(&path.join("/"));
    if rng.gen_bool(0.5) {
        image.push_str(&format!(":{}", word(rng).to_uppercase()));
    }
    if rng.gen_bool(0.2) {
        let hex: String = (0..64)
            .map(|_| b"0123456789abcdef"[rng.gen_range(0..16)] as char)
            .collect();
        image.push_str(&format!("@sha256:{hex}"));
    }
    image
}

#[test]
fn image_references_of_the_grammar_pass_and_nothing_odd_does() {
    let (seed, mut rng) = seeded();
    for _ in 0..ROUNDS {
        let image = grammatical_image(&mut rng);
        assert_eq!(validate_image(&image), Ok(()), "seed {seed}: {image:?}");
        assert_eq!(
            registry_host(&image),
            named_registry(&image).unwrap_or_else(|| "docker.io".into())
        );

        let odd = input(&mut rng, 16);
        if validate_image(&odd).is_ok() {
            assert!(
                odd.len() <= 255
                    && odd.is_ascii()
                    && !odd.contains([' ', '\0', '\n', '\t', '\\', '%', '='])
                    && !odd.contains("//")
                    && !odd.starts_with('/')
                    && !odd.ends_with([':', '/', '@']),
                "seed {seed}: accepted {odd:?}"
            );
        }
    }
}

fn job(rng: &mut StdRng) -> CreateJobRequest {
    CreateJobRequest {
        app_id: "app".into(),
        image: Some("team/app:v1".into()),
        ..Default::default()
    }
    .with(|r| {
        r.env = BTreeMap::from([(input(rng, 6), input(rng, 6))]);
        r.volumes = vec![VolumeSpec {
            name: input(rng, 6),
            mount_path: format!(
                "{}{}",
                if rng.gen_bool(0.8) { "/" } else { "" },
                input(rng, 8)
            ),
        }];
        if rng.gen_bool(0.5) {
            r.user = Some(input(rng, 6));
        }
    })
}

trait With: Sized {
    fn with(self, change: impl FnOnce(&mut Self)) -> Self;
}

impl With for CreateJobRequest {
    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
}

#[test]
fn accepted_env_volumes_and_users_are_what_the_engine_can_take() {
    let (seed, mut rng) = seeded();
    let mut accepted = 0;
    // Few random jobs pass every check (env, volumes and user at once), so this property draws
    // ten times as many as the others to be sure it checks some on every seed.
    for _ in 0..10 * ROUNDS {
        let request = job(&mut rng);
        let Ok(valid) = request.clone().validate() else {
            continue;
        };
        accepted += 1;
        let payload = valid.payload;
        for (name, value) in &payload.env {
            assert!(
                !name.is_empty()
                    && !name.contains(['=', '\0'])
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && !value.contains('\0'),
                "seed {seed}: env {name:?}={value:?}"
            );
        }
        for volume in &payload.volumes {
            let path = &volume.mount_path;
            assert!(is_dns_label(&volume.name), "seed {seed}: {volume:?}");
            assert!(
                path.starts_with('/')
                    && path != "/"
                    && !path.split('/').any(|p| p == "..")
                    && !path.contains([':', ',', '\0', '\n']),
                "seed {seed}: mountPath {path:?}"
            );
        }
        if let Some(user) = &payload.user {
            assert!(
                allowed(&user.to_ascii_lowercase(), b"_.-:")
                    && user.split(':').count() <= 2
                    && !user.split(':').any(|p| p.is_empty() || p.starts_with('-')),
                "seed {seed}: user {user:?}"
            );
        }
    }
    assert!(
        accepted > 0,
        "seed {seed}: no input was accepted, so nothing was checked"
    );
}

#[test]
fn accepted_build_paths_stay_inside_the_repository() {
    let (seed, mut rng) = seeded();
    for _ in 0..ROUNDS {
        let (context, dockerfile) = (input(&mut rng, 6), input(&mut rng, 6));
        let request = CreateJobRequest {
            app_id: "app".into(),
            repo_url: Some("https://example.com/r.git".into()),
            image_repo: Some("127.0.0.1:5000/team/app".into()),
            build_context: Some(context),
            dockerfile_path: Some(dockerfile),
            ..Default::default()
        };
        let Ok(valid) = request.validate() else {
            continue;
        };
        let build = valid.payload.build.expect("a build job");
        for path in [&build.build_context, &build.dockerfile_path] {
            assert!(
                !path.is_empty()
                    && !path.starts_with('/')
                    && !path.split('/').any(|p| p == "..")
                    && !path.contains(['\0', '\n']),
                "seed {seed}: {path:?}"
            );
        }
    }
}

#[test]
fn container_users_never_carry_anything_but_user_and_group() {
    let (seed, mut rng) = seeded();
    for _ in 0..ROUNDS {
        let user = input(&mut rng, 5);
        if check_container_user(&user).is_ok() {
            assert!(
                user.is_ascii()
                    && user.split(':').count() <= 2
                    && !user.contains([' ', '\0', '\n', '/', '@', ',', '='])
                    && user.split(':').all(|p| !p.is_empty() && p.len() <= 32),
                "seed {seed}: accepted {user:?}"
            );
        }
    }
}
