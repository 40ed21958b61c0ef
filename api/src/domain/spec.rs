//! An app's desired state (SPEC §6): what a tenant `PUT`s, how `PATCH …/config` merges into it,
//! and the deploy job it becomes. Validation is the control plane's own
//! ([`CreateJobRequest::validate`]), run here first so a bad spec is refused before it is stored.

use std::collections::BTreeMap;

use berth_shared::wire::{limits, CreateJobRequest, JobKind, Resources, VolumeSpec};
use serde::{Deserialize, Serialize};

/// The label every job the api asks for carries: the tenant it is for.
pub const TENANT_LABEL: &str = "berth-tenant";

/// Where a build gets its source and where it pushes the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildSource {
    /// `http(s)://`, `git://` or `file://` URL of the repository.
    pub repo_url: String,
    /// Commit, branch or tag (the default branch when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Dockerfile path within the context (`Dockerfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_path: Option<String>,
    /// Build context within the repository (`.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_context: Option<String>,
    /// Repository the image is pushed to, tagged with the commit sha.
    pub image_repo: String,
}

/// An app spec without secret values: what is stored, shown and deployed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    /// A ready image (`registry/app:tag`); or give `build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Build the image from git; or give `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSource>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The port the app listens on in its container (8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub container_port: Option<u16>,
    /// A path that answers 2xx once the app is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    /// Memory and CPU the app reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Named volumes (they go when the app is deleted).
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// A small string map the tenant owns.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds without traffic before the app sleeps (SPEC §8; unset = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub sleep_after_secs: Option<u64>,
    /// Run the container with a read-only root file system (a small writable `/tmp` is added).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_rootfs: bool,
    /// Run the container as this user (`uid[:gid]`, or a name the image knows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `PUT /v1/apps/{appId}` and `PUT /v1/templates/{templateId}`: a spec with its secret values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecRequest {
    /// A ready image; or give `build`.
    #[serde(default)]
    pub image: Option<String>,
    /// Build from git; or give `image`.
    #[serde(default)]
    pub build: Option<BuildSource>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Like `env`, but write-only: answers show the names only.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Container port (8080).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub container_port: Option<u16>,
    /// Readiness path.
    #[serde(default)]
    pub health_check_path: Option<String>,
    /// Reserved resources.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// Tenant-owned labels (at most 15: the api adds its own).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds without traffic before the app sleeps.
    #[serde(default)]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub sleep_after_secs: Option<u64>,
    /// Run the container with a read-only root file system (a small writable `/tmp` is added).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_rootfs: bool,
    /// Run the container as this user (`uid[:gid]`, or a name the image knows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl SpecRequest {
    /// The spec and its secret values, apart.
    pub fn split(self) -> (AppSpec, BTreeMap<String, String>) {
        (
            AppSpec {
                image: self.image,
                build: self.build,
                env: self.env,
                container_port: self.container_port,
                health_check_path: self.health_check_path,
                resources: self.resources,
                volumes: self.volumes,
                labels: self.labels,
                sleep_after_secs: self.sleep_after_secs,
                read_only_rootfs: self.read_only_rootfs,
                user: self.user,
            },
            self.secret_env,
        )
    }
}

/// `PATCH /v1/apps/{appId}/config`: values to set, `null` to remove.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigPatch {
    /// Environment variables to set (a string) or remove (`null`).
    #[serde(default)]
    pub env: BTreeMap<String, Option<String>>,
    /// Secret environment variables to set or remove.
    #[serde(default)]
    pub secret_env: BTreeMap<String, Option<String>>,
}

/// Applies `patch` to a map: a value sets, `None` removes.
pub fn merge(map: &mut BTreeMap<String, String>, patch: BTreeMap<String, Option<String>>) {
    for (name, value) in patch {
        match value {
            Some(v) => map.insert(name, v),
            None => map.remove(&name),
        };
    }
}

/// The deploy job of `spec` for `app_id`, labelled with the tenant.
pub fn deploy_job(
    app_id: &str,
    tenant_id: &str,
    spec: &AppSpec,
    secrets: &BTreeMap<String, String>,
) -> CreateJobRequest {
    let build = spec.build.clone();
    let mut labels = spec.labels.clone();
    labels.insert(TENANT_LABEL.to_owned(), tenant_id.to_owned());
    CreateJobRequest {
        app_id: app_id.to_owned(),
        kind: JobKind::Deploy,
        image: spec.image.clone(),
        repo_url: build.as_ref().map(|b| b.repo_url.clone()),
        commit: build.as_ref().and_then(|b| b.commit.clone()),
        dockerfile_path: build.as_ref().and_then(|b| b.dockerfile_path.clone()),
        build_context: build.as_ref().and_then(|b| b.build_context.clone()),
        image_repo: build.map(|b| b.image_repo),
        env: spec.env.clone(),
        secret_env: secrets.clone(),
        container_port: spec.container_port,
        health_check_path: spec.health_check_path.clone(),
        resources: spec.resources,
        volumes: spec.volumes.clone(),
        labels,
        read_only_rootfs: spec.read_only_rootfs,
        user: spec.user.clone(),
        // The spec bounds it to a year, well inside u32.
        sleep_after_secs: spec
            .sleep_after_secs
            .and_then(|secs| u32::try_from(secs).ok()),
        sleep_mode: None,
        sleep_waiting_page: None,
        remove_volumes: false,
    }
}

/// The stop job for `app_id`, labelled with the tenant; `remove_volumes` for a delete (the
/// app's volumes go with it), not for a stop (they wait for its next deploy).
pub fn stop_job(app_id: &str, tenant_id: &str, remove_volumes: bool) -> CreateJobRequest {
    CreateJobRequest {
        app_id: app_id.to_owned(),
        kind: JobKind::Stop,
        labels: [(TENANT_LABEL.to_owned(), tenant_id.to_owned())].into(),
        remove_volumes,
        ..Default::default()
    }
}

/// Checks `spec` the way the control plane will, plus what only the api knows: its label and
/// `sleepAfterSecs`. The message names the first problem.
pub fn validate(
    app_id: &str,
    tenant_id: &str,
    spec: &AppSpec,
    secrets: &BTreeMap<String, String>,
) -> Result<(), String> {
    if spec.labels.contains_key(TENANT_LABEL) {
        return Err(format!("the label {TENANT_LABEL} is the api's own"));
    }
    if spec.labels.len() >= limits::MAX_LABELS {
        return Err(format!("at most {} labels", limits::MAX_LABELS - 1));
    }
    if spec.sleep_after_secs == Some(0) {
        return Err("sleepAfterSecs must be at least 1 (leave it out to never sleep)".into());
    }
    deploy_job(app_id, tenant_id, spec, secrets)
        .validate()
        .map(|_| ())
}

/// The spec a rollback deploys: the earlier spec with the image that deployment ran, never a
/// rebuild.
pub fn pinned(spec: &AppSpec, image: &str) -> AppSpec {
    AppSpec {
        image: Some(image.to_owned()),
        build: None,
        ..spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        AppSpec {
            image: Some("127.0.0.1:5000/demo:v1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn merge_sets_and_removes() {
        let mut env: BTreeMap<String, String> =
            [("A".into(), "1".into()), ("B".into(), "2".into())].into();
        merge(
            &mut env,
            [("A".into(), None), ("C".into(), Some("3".into()))].into(),
        );
        assert_eq!(
            env,
            [("B".into(), "2".into()), ("C".into(), "3".into())].into()
        );
    }

    #[test]
    fn jobs_carry_the_tenant_and_secrets() {
        let secrets = [("TOKEN".to_string(), "s".to_string())].into();
        let job = deploy_job("a", "t1", &spec(), &secrets);
        assert_eq!(job.labels[TENANT_LABEL], "t1");
        assert_eq!(job.secret_env, secrets);
        assert!(job.validate().is_ok());
    }

    #[test]
    fn validation_is_the_control_planes() {
        let bad = AppSpec {
            image: Some("Bad Image".into()),
            ..spec()
        };
        assert!(validate("a", "t", &bad, &BTreeMap::new())
            .unwrap_err()
            .contains("image"));
        assert!(validate("Bad", "t", &spec(), &BTreeMap::new())
            .unwrap_err()
            .contains("DNS label"));
        let mut own = spec();
        own.labels.insert(TENANT_LABEL.into(), "x".into());
        assert!(validate("a", "t", &own, &BTreeMap::new()).is_err());
    }

    #[test]
    fn a_pinned_spec_deploys_the_image_not_the_build() {
        let built = AppSpec {
            image: None,
            build: Some(BuildSource {
                repo_url: "file:///r".into(),
                commit: None,
                dockerfile_path: None,
                build_context: None,
                image_repo: "127.0.0.1:5000/r".into(),
            }),
            ..spec()
        };
        let p = pinned(&built, "127.0.0.1:5000/r:abc");
        assert_eq!(p.image.as_deref(), Some("127.0.0.1:5000/r:abc"));
        assert!(p.build.is_none());
    }
}
