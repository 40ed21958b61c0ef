//! Image references: what `validate_image` accepts has the shape
//! `[host[:port]/]path[:tag][@sha256:hex]` in every part, its repository passes
//! `validate_repository_ref`, and registry credentials fit it only for its own registry.
//! The input is the reference, then optionally a newline and a credential's server address.
#![no_main]

use berth_fuzz::assert_short_message;
use berth_shared::image::{
    credentials_fit, named_registry, normalize_registry, registry_host, validate_image,
    validate_repository_ref, DOCKER_HUB,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (image, server) = match text.split_once('\n') {
        Some((i, s)) => (i, Some(s)),
        None => (text, None),
    };
    if let Some(server) = server {
        if credentials_fit(server, image) {
            assert_eq!(normalize_registry(server), registry_host(image));
            assert!(!normalize_registry(server).is_empty());
        }
    }
    let accepted = validate_image(image);
    if let Err(e) = &accepted {
        assert_short_message(&e.to_string());
        return;
    }
    assert!((1..=255).contains(&image.len()));
    // Printable ASCII only, and nothing the engine or a shell could take for an option.
    assert!(image.bytes().all(|b| b.is_ascii_graphic()), "{image:?}");
    assert!(!image.starts_with(['-', '/', '.', ':', '@']), "{image:?}");

    let (name_and_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let name = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &name_and_tag[last_slash + i + 1..];
            assert!((1..=128).contains(&tag.len()) && !tag.starts_with(['.', '-']));
            &name_and_tag[..last_slash + i]
        }
        None => name_and_tag,
    };
    assert_eq!(
        validate_repository_ref(name),
        Ok(()),
        "repository of {image:?}"
    );

    // The path after the registry host is lowercase, without empty components or `..`.
    let host = named_registry(image);
    let path = match &host {
        Some(_) => name.split_once('/').map_or("", |(_, p)| p),
        None => name,
    };
    assert!(!path.is_empty(), "{image:?}");
    for part in path.split('/') {
        assert!(!part.is_empty() && part != "." && part != "..", "{image:?}");
        assert!(!part.bytes().any(|b| b.is_ascii_uppercase()), "{image:?}");
    }
    // Credentials fit exactly its own registry.
    let registry = registry_host(image);
    match &host {
        Some(h) => {
            // The first component, lowercased; Docker Hub's aliases are Docker Hub.
            assert_eq!(&registry, h);
            let first = image.split('/').next().unwrap_or("").to_ascii_lowercase();
            let hub_alias = [
                "index.docker.io",
                "registry-1.docker.io",
                "registry.hub.docker.com",
            ];
            assert!(first == *h || (h == DOCKER_HUB && hub_alias.contains(&first.as_str())));
        }
        None => assert_eq!(registry, DOCKER_HUB),
    }
    assert!(credentials_fit(&registry, image));
    assert!(credentials_fit(&format!("https://{registry}/v2/"), image));
    assert!(!credentials_fit(&format!("{registry}.evil.example"), image));
    assert!(
        !credentials_fit(&format!("evil.example/{registry}"), image) || registry == "evil.example"
    );
});
