//! The Docker engine, through bollard: only the calls the agent needs, each touching only
//! containers that carry this node's `berth.node` label.

use std::collections::HashMap;

use berth_shared::wire::agent::RegistryAuth;
use berth_shared::wire::Capacity;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HostConfig, Mount,
    MountTypeEnum, MountVolumeOptions, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;

use crate::error::AgentError;

/// Label naming the app a container serves.
pub const LABEL_APP: &str = "berth.app";
/// Label naming the node (agent) that owns a container.
pub const LABEL_NODE: &str = "berth.node";
/// Label naming the deploy job that made a container.
pub const LABEL_JOB: &str = "berth.job";

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
}

/// The Docker engine as seen by one node.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    node_id: String,
}

impl Engine {
    /// Connects to the local engine over its Unix socket and agrees on an API version
    /// (Debian's docker.io speaks 1.41, older than bollard's default).
    pub async fn connect(node_id: &str) -> Result<Self, DockerError> {
        let docker = Docker::connect_with_unix_defaults()?
            .negotiate_version()
            .await?;
        Ok(Self {
            docker,
            node_id: node_id.to_owned(),
        })
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
    pub async fn capacity(&self, max_apps: u32) -> Result<Capacity, DockerError> {
        let info = self.docker.info().await?;
        Ok(Capacity {
            cpus: info.ncpu.unwrap_or(0) as f64,
            memory_mb: info.mem_total.unwrap_or(0).max(0) as u64 / (1024 * 1024),
            max_apps,
        })
    }

    /// Makes sure `image` is present: used as is when it is, pulled (with credentials) when not.
    pub async fn ensure_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), AgentError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
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
                        "image {image} is not on this node and could not be pulled: {message}"
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
        let mounts = spec
            .volumes
            .iter()
            .map(|(name, path)| Mount {
                target: Some(path.clone()),
                source: Some(volume_name(&spec.app_id, name)),
                typ: Some(MountTypeEnum::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    labels: Some(HashMap::from([
                        (LABEL_APP.to_owned(), spec.app_id.clone()),
                        (LABEL_NODE.to_owned(), self.node_id.clone()),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let host_config = HostConfig {
            // Published on loopback only, on a port the kernel picks: only the gateway reaches it.
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )])),
            memory: spec.memory_bytes,
            nano_cpus: spec.nano_cpus,
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

/// The Docker volume behind an app's named volume.
pub fn volume_name(app_id: &str, name: &str) -> String {
    format!("berth-{app_id}-{name}")
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
