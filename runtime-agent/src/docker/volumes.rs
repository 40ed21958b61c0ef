//! Apps' named volumes: one Docker volume per (app, name), labelled with both, and mounted only
//! into the app it was made for.
//!
//! The name is `berth-{app}_{name}`: app ids and volume names are DNS labels, which never hold
//! `_`, so no two pairs share a volume. (Before, `berth-{app}-{name}` made `shop` + `db-data` and
//! `shop-db` + `data` one volume.) A volume of the old form labelled for the app is adopted, so
//! an upgrade keeps the data.
//!
//! A stop keeps them; a stop that asks `removeVolumes` (an app deleted for good) deletes every
//! volume labelled for the app, of either name, once its containers are gone.

use std::collections::HashMap;

use bollard::models::{Volume, VolumeCreateOptions};
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};

use super::{engine_status, is_not_found, Engine, LABEL_APP, LABEL_NODE};
use crate::error::AgentError;

/// Label naming the volume within its app.
pub const LABEL_VOLUME: &str = "berth.volume";

/// The Docker volume behind an app's named volume.
pub fn volume_name(app_id: &str, name: &str) -> String {
    format!("berth-{app_id}_{name}")
}

/// The name agents before 0.2 gave it (ambiguous; adopted only when labelled for the app).
fn legacy_volume_name(app_id: &str, name: &str) -> String {
    format!("berth-{app_id}-{name}")
}

fn label<'a>(volume: &'a Volume, key: &str) -> Option<&'a str> {
    volume.labels.get(key).map(String::as_str)
}

impl Engine {
    /// The Docker volumes to mount for `app_id`'s `(name, mount path)` pairs, as
    /// `(docker volume, mount path)`: each made when missing, and refused (409) when it belongs
    /// to another app or to no app.
    pub async fn app_volumes(
        &self,
        app_id: &str,
        volumes: &[(String, String)],
    ) -> Result<Vec<(String, String)>, AgentError> {
        let mut mounts = Vec::with_capacity(volumes.len());
        for (name, path) in volumes {
            let docker_name = self.app_volume(app_id, name).await?;
            mounts.push((docker_name, path.clone()));
        }
        Ok(mounts)
    }

    async fn app_volume(&self, app_id: &str, name: &str) -> Result<String, AgentError> {
        let wanted = volume_name(app_id, name);
        if let Some(volume) = self.volume(&wanted).await? {
            let owner = label(&volume, LABEL_APP);
            if owner != Some(app_id) || label(&volume, LABEL_VOLUME) != Some(name) {
                return Err(AgentError::Conflict(format!(
                    "the Docker volume {wanted} is labelled for {}, not for volume {name} of app {app_id}; \
                     a volume is only ever mounted into the app it was made for",
                    owner.map_or("no app".to_owned(), |o| format!("app {o}"))
                )));
            }
            return Ok(wanted);
        }
        let legacy = legacy_volume_name(app_id, name);
        if let Some(volume) = self.volume(&legacy).await? {
            if label(&volume, LABEL_APP) == Some(app_id) {
                tracing::info!(app_id, volume = %legacy, "using the app's volume of the old name");
                return Ok(legacy);
            }
        }
        let options = VolumeCreateOptions {
            name: Some(wanted.clone()),
            labels: Some(HashMap::from([
                (LABEL_APP.to_owned(), app_id.to_owned()),
                (LABEL_VOLUME.to_owned(), name.to_owned()),
                (LABEL_NODE.to_owned(), self.node_id.clone()),
            ])),
            ..Default::default()
        };
        self.docker.create_volume(options).await?;
        Ok(wanted)
    }

    /// Deletes every Docker volume labelled for `app_id`, with its data; the number deleted.
    /// Call it once the app's containers are gone: a volume another container still uses is
    /// refused (409, naming it) rather than forced, and the others are deleted all the same.
    pub async fn remove_app_volumes(&self, app_id: &str) -> Result<u32, AgentError> {
        let options = ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{LABEL_APP}={app_id}")],
            )])),
        };
        let listed = self.docker.list_volumes(Some(options)).await?;
        let (mut removed, mut in_use) = (0, Vec::new());
        for volume in listed.volumes.unwrap_or_default() {
            // The filter is the engine's; the label is checked again before data is deleted.
            if label(&volume, LABEL_APP) != Some(app_id) {
                continue;
            }
            match self
                .docker
                .remove_volume(&volume.name, Some(RemoveVolumeOptions { force: false }))
                .await
            {
                Ok(()) => removed += 1,
                Err(e) if is_not_found(&e) => {}
                // 409: a container mounts it.
                Err(e) if engine_status(&e) == Some(409) => in_use.push(volume.name),
                Err(e) => return Err(e.into()),
            }
        }
        if !in_use.is_empty() {
            return Err(AgentError::Conflict(format!(
                "app {app_id}'s volume(s) {} are in use by a container Berth did not make for it; \
                 remove that container, then stop the app again",
                in_use.join(", ")
            )));
        }
        Ok(removed)
    }

    async fn volume(&self, name: &str) -> Result<Option<Volume>, AgentError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_never_collide() {
        assert_ne!(
            volume_name("shop", "db-data"),
            volume_name("shop-db", "data")
        );
        assert_eq!(
            legacy_volume_name("shop", "db-data"),
            legacy_volume_name("shop-db", "data")
        );
    }
}
