//! Named volumes: every set `check_container` accepts can be mounted by the engine (DNS-label
//! names once each, absolute targets other than the root, without `..`, `:`, `,` or control
//! characters, no two on one mount point).
#![no_main]

use berth_fuzz::{assert_round_trip, assert_short_message, assert_volumes_deployable};
use berth_shared::wire::{check_container, ContainerInput, Resources, VolumeSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|pairs: Vec<(String, String)>| {
    let volumes: Vec<VolumeSpec> = pairs
        .into_iter()
        .map(|(name, mount_path)| VolumeSpec { name, mount_path })
        .collect();
    let checked = check_container(&ContainerInput {
        image: None,
        env: &[],
        container_port: 8080,
        health_check_path: None,
        resources: &Resources::default(),
        volumes: &volumes,
    });
    match checked {
        Ok(()) => {
            assert_volumes_deployable(&volumes);
            for v in &volumes {
                assert_round_trip(v);
            }
        }
        Err(e) => assert_short_message(&e),
    }
});
