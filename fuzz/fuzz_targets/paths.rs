//! Build jobs: an accepted `dockerfilePath` and `buildContext` never leave the clone (not
//! absolute, no `..`), `repoUrl` has an allowed scheme and no spaces, `commit`, `user` and
//! `healthCheckPath` cannot be read as options or carry control characters.
#![no_main]

use arbitrary::Arbitrary;
use berth_fuzz::{assert_build_safe, assert_short_message, assert_user_plain};
use berth_shared::wire::CreateJobRequest;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    dockerfile_path: Option<String>,
    build_context: Option<String>,
    commit: Option<String>,
    scheme: u8,
    repo_rest: String,
    health_check_path: Option<String>,
    user: Option<String>,
}

fuzz_target!(|input: Input| {
    let scheme = [
        "https://", "http://", "git://", "file://", "ssh://", "", "-",
    ][usize::from(input.scheme) % 7];
    let job = CreateJobRequest {
        app_id: "demo".into(),
        repo_url: Some(format!("{scheme}{}", input.repo_rest)),
        image_repo: Some("127.0.0.1:5000/demo".into()),
        commit: input.commit,
        dockerfile_path: input.dockerfile_path,
        build_context: input.build_context,
        health_check_path: input.health_check_path,
        user: input.user,
        ..Default::default()
    };
    match job.validate() {
        Ok(valid) => {
            let build = valid.payload.build.expect("a build job");
            assert_build_safe(&build);
            if let Some(path) = &valid.payload.health_check_path {
                assert!(path.starts_with('/'), "{path:?}");
                assert!(!path.chars().any(|c| c.is_whitespace() || c.is_control()));
            }
            if let Some(user) = &valid.payload.user {
                assert_user_plain(user);
            }
        }
        Err(e) => assert_short_message(&e),
    }
});
