//! The Docker engine, through bollard: only the calls the agent needs, each touching only
//! containers that carry this node's `berth.node` label.
//!
//! Every app container is fenced in the same way ([`Isolation`]): on the apps' network
//! ([`network`]), no capabilities, no new privileges, a pids limit, memory and CPU limits (the
//! agent's defaults when the job asks none), bounded logs, and, where the job asks, a read-only
//! root file system and a non-root user. Its volumes are its own ([`volumes`]).

pub mod network;
pub mod volumes;

use std::collections::HashMap;

use berth_shared::image::{credentials_fit, named_registry};
use berth_shared::wire::agent::RegistryAuth;
use berth_shared::wire::Capacity;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HostConfig,
    HostConfigLogConfig, Mount, MountTmpfsOptions, MountTypeEnum, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;

use self::network::AppsNetwork;
use crate::error::AgentError;

/// Label naming the app a container serves.
pub const LABEL_APP: &str = "berth.app";
/// Label naming the node (agent) that owns a container.
pub const LABEL_NODE: &str = "berth.node";
/// Label naming the deploy job that made a container.
pub const LABEL_JOB: &str = "berth.job";
/// Label on what the agent makes for itself (the apps' network).
pub const LABEL_MANAGED: &str = "berth.managed";
/// Size of the `/tmp` a container with a read-only root file system gets.
const READ_ONLY_TMP_BYTES: i64 = 64 * 1024 * 1024;

/// How every app container is fenced in; from the agent's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Isolation {
    /// The Docker network apps join (made by the agent, containers apart).
    pub network: String,
    /// Memory limit of a job that asks none, in bytes (`None`: unlimited).
    pub default_memory_bytes: Option<i64>,
    /// CPU limit of a job that asks none, in billionths of a core (`None`: unlimited).
    pub default_nano_cpus: Option<i64>,
    /// Most processes one container may run (`None`: unlimited); stops fork bombs.
    pub pids_limit: Option<i64>,
    /// Size at which a container's log file is rotated (`json-file` `max-size`, e.g. `10m`).
    pub log_max_size: String,
    /// Rotated log files kept per container (`json-file` `max-file`).
    pub log_max_files: u32,
}

/// Everything needed to create an app's container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The app.
    pub app_id: String,
    /// The job making it.
    pub job_id: String,
    /// Image reference.
    pub image: String,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Port the app listens on inside the container.
    pub container_port: u16,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a core.
    pub nano_cpus: Option<i64>,
    /// `(volume name within the app, mount path)`.
    pub volumes: Vec<(String, String)>,
    /// Mount the image read-only (a small tmpfs `/tmp` is writable).
    pub read_only_rootfs: bool,
    /// Run as this user (`uid[:gid]` or a name the image knows) instead of the image's.
    pub user: Option<String>,
}

/// The Docker engine as seen by one node.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    node_id: String,
    isolation: Isolation,
    network: AppsNetwork,
}

impl Engine {
    /// Connects to the local engine over its Unix socket, agrees on an API version (Debian's
    /// docker.io speaks 1.41, older than bollard's default) and finds or makes the apps' network.
    pub async fn connect(node_id: &str, isolation: Isolation) -> anyhow::Result<Self> {
        let docker = async { Docker::connect_with_unix_defaults()?.negotiate_version().await }
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "the Docker engine does not answer on its Unix socket (/var/run/docker.sock or DOCKER_HOST): {e}; \
                     start it, e.g. with scripts/ensure-docker.sh"
                )
            })?;
        let network = network::ensure(&docker, &isolation.network)
            .await
            .map_err(|e| anyhow::anyhow!("preparing the apps' network: {e}"))?;
        Ok(Self {
            docker,
            node_id: node_id.to_owned(),
            isolation,
            network,
        })
    }

    /// The apps' network.
    pub fn network(&self) -> &AppsNetwork {
        &self.network
    }

    /// The engine's client, for the calls other modules make on this node's containers
    /// (sleeping apps stop, pause, start and unpause theirs).
    pub(crate) fn client(&self) -> &Docker {
        &self.docker
    }

    /// The engine's version when it answers.
    pub async fn ping(&self) -> Result<String, DockerError> {
        let version = self.docker.version().await?;
        Ok(version.version.unwrap_or_default())
    }

    /// What this host can carry, from the engine's view of it.
    pub async fn capacity(
        &self,
        max_apps: u32,
        max_sleeping_apps: u32,
    ) -> Result<Capacity, DockerError> {
        let info = self.docker.info().await?;
        Ok(Capacity {
            cpus: info.ncpu.unwrap_or(0) as f64,
            memory_mb: info.mem_total.unwrap_or(0).max(0) as u64 / (1024 * 1024),
            max_apps,
            max_sleeping_apps,
        })
    }

    /// Makes sure `image` is present and this job may have it.
    ///
    /// A reference that names its registry (`127.0.0.1:5000/team/app:v1`) is pulled on every
    /// deploy, with the job's credentials, even when the node has it: the registry decides
    /// whether this job may have the image, so a private image another job pulled is never
    /// handed to a job without the right to it (the pull of an image already here moves only
    /// its manifest). A bare name (`team/app`, or an image built on the node) is used as is
    /// when present, and pulled from Docker Hub when not. Credentials go only with a pull from
    /// the registry they are for.
    pub async fn ensure_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), AgentError> {
        if named_registry(image).is_none() {
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let auth = auth.filter(|a| {
            let fits = a
                .server_address
                .as_deref()
                .is_none_or(|server| credentials_fit(server, image));
            if !fits {
                tracing::warn!(image, registry = ?a.server_address, "registry credentials are for another registry; pulling without them");
            }
            fits
        });
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: a.server_address.clone(),
            ..Default::default()
        });
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, credentials);
        while let Some(progress) = pull.next().await {
            match progress {
                Ok(_) => {}
                Err(DockerError::DockerResponseServerError { message, .. })
                | Err(DockerError::DockerStreamError { error: message }) => {
                    return Err(AgentError::DeployFailed(format!(
                        "image {image} could not be pulled: {message}"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates and starts an app's container; removes it again if it cannot start.
    /// Returns the container id.
    pub async fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, AgentError> {
        let port_key = format!("{}/tcp", spec.container_port);
        let labels = HashMap::from([
            (LABEL_APP.to_owned(), spec.app_id.clone()),
            (LABEL_NODE.to_owned(), self.node_id.clone()),
            (LABEL_JOB.to_owned(), spec.job_id.clone()),
        ]);
        let volumes = self.app_volumes(&spec.app_id, &spec.volumes).await?;
        let mut mounts: Vec<Mount> = volumes
            .into_iter()
            .map(|(source, target)| Mount {
                target: Some(target),
                source: Some(source),
                typ: Some(MountTypeEnum::VOLUME),
                ..Default::default()
            })
            .collect();
        if spec.read_only_rootfs {
            mounts.push(Mount {
                target: Some("/tmp".into()),
                typ: Some(MountTypeEnum::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(READ_ONLY_TMP_BYTES),
                    mode: Some(0o1777),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let limits = &self.isolation;
        let host_config = HostConfig {
            // Published on loopback only, on a port the kernel picks: only the gateway reaches it.
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )])),
            network_mode: Some(self.network.id.clone()),
            memory: spec.memory_bytes.or(limits.default_memory_bytes),
            nano_cpus: spec.nano_cpus.or(limits.default_nano_cpus),
            pids_limit: limits.pids_limit,
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), limits.log_max_size.clone()),
                    ("max-file".to_owned(), limits.log_max_files.to_string()),
                ])),
            }),
            readonly_rootfs: Some(spec.read_only_rootfs),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            // A small init as PID 1 forwards SIGTERM and reaps zombies, so stops are quick.
            init: Some(true),
            mounts: Some(mounts),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            user: spec.user.clone(),
            labels: Some(labels),
            exposed_ports: Some(HashMap::from([(port_key, HashMap::new())])),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = format!("berth-{}-{:08x}", spec.app_id, rand::random::<u32>());
        let options = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        let created = self.docker.create_container(Some(options), body).await?;
        if let Err(e) = self
            .docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            let _ = self.remove(&created.id, 0).await;
            return Err(AgentError::DeployFailed(format!(
                "the container could not start: {}",
                docker_message(&e)
            )));
        }
        Ok(created.id)
    }

    /// The container, or `None` when it does not exist.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// This node's containers, of one app or of all, running or not.
    pub async fn list_mine(
        &self,
        app_id: Option<&str>,
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let mut labels = vec![format!("{LABEL_NODE}={}", self.node_id)];
        if let Some(app) = app_id {
            labels.push(format!("{LABEL_APP}={app}"));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), labels)])),
            ..Default::default()
        };
        self.docker.list_containers(Some(options)).await
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace_secs`) and removes it, keeping
    /// its named volumes. A container already gone is not an error.
    pub async fn remove(&self, id: &str, grace_secs: u32) -> Result<(), DockerError> {
        if grace_secs > 0 {
            let options = StopContainerOptions {
                t: Some(grace_secs.min(i32::MAX as u32) as i32),
                ..Default::default()
            };
            match self.docker.stop_container(id, Some(options)).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) || is_not_modified(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) || is_conflict_removal_in_progress(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The last `tail` lines of a container's stdout and stderr.
    pub async fn logs_tail(&self, id: &str, tail: usize) -> Result<String, DockerError> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
        }
        Ok(out)
    }
}

/// The host port a container's port is published on, from an inspect answer.
pub fn published_port(container: &ContainerInspectResponse) -> Option<u16> {
    let ports = container.network_settings.as_ref()?.ports.as_ref()?;
    ports
        .values()
        .flatten()
        .flatten()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// The host port a container's port is published on, from a list answer.
pub fn summary_port(container: &ContainerSummary) -> Option<u16> {
    container.ports.as_ref()?.iter().find_map(|p| p.public_port)
}

/// The engine's own message, for error details.
pub fn docker_message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The status the engine answered with, when it answered at all.
pub(crate) fn engine_status(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether the engine answered 404 (no such container, image, volume or network).
fn is_not_found(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A 304: the container was already in the asked state (stopped, started).
pub(crate) fn is_not_modified(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

fn is_conflict_removal_in_progress(error: &DockerError) -> bool {
    matches!(error, DockerError::DockerResponseServerError { status_code: 409, message } if message.contains("already in progress"))
}
