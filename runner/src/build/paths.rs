//! Where a build reads from: the job's `buildContext` and `dockerfilePath`, resolved in the
//! checked-out tree with every symlink followed, and refused when they end up outside the
//! clone. The request's paths are checked for `..` when the job is made, but only the checkout
//! shows where a symlink in the repository (`up -> ..`) leads.

use std::path::{Path, PathBuf};

use crate::error::JobError;

/// The build's context folder and Dockerfile, both real paths inside the clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPaths {
    /// The folder `docker build` sends as its context.
    pub context: PathBuf,
    /// The Dockerfile (inside the clone; it need not be inside the context).
    pub dockerfile: PathBuf,
}

/// Resolves `build_context` in `clone` and `dockerfile_path` in that context.
pub fn resolve(
    clone: &Path,
    build_context: &str,
    dockerfile_path: &str,
) -> Result<BuildPaths, JobError> {
    let root = clone
        .canonicalize()
        .map_err(|e| JobError::retryable(format!("cannot read the checkout: {e}")))?;
    let context = inside(
        &root,
        &root.join(build_context),
        "buildContext",
        build_context,
    )?;
    if !context.is_dir() {
        return Err(JobError::fatal(format!(
            "buildContext {build_context:?} is not a folder in this commit"
        )));
    }
    let missing = || {
        JobError::fatal(format!(
            "there is no Dockerfile at {build_context}/{dockerfile_path} in this commit"
        ))
    };
    let candidate = context.join(dockerfile_path);
    if !candidate.exists() {
        return Err(missing());
    }
    let dockerfile = inside(&root, &candidate, "dockerfilePath", dockerfile_path)?;
    if !dockerfile.is_file() {
        return Err(missing());
    }
    Ok(BuildPaths {
        context,
        dockerfile,
    })
}

/// `path` with symlinks followed, when it stays under `root`.
fn inside(root: &Path, path: &Path, field: &str, given: &str) -> Result<PathBuf, JobError> {
    let real = path.canonicalize().map_err(|e| {
        JobError::fatal(format!(
            "{field} {given:?} does not exist in this commit ({e})"
        ))
    })?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err(JobError::fatal(format!(
            "{field} {given:?} leads outside the repository (a symlink in the commit points out of it); \
             builds read only their own checkout"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let clone = dir.path().join("src");
        std::fs::create_dir_all(clone.join("app")).unwrap();
        std::fs::write(clone.join("app/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        symlink("..", clone.join("up")).unwrap();
        symlink("../../secret", clone.join("app/Leak")).unwrap();
        symlink("app", clone.join("inner")).unwrap();
        dir
    }

    #[test]
    fn paths_inside_the_clone_resolve() {
        let dir = tree();
        let clone = dir.path().join("src");
        let paths = resolve(&clone, "app", "Dockerfile").unwrap();
        assert_eq!(paths.context, clone.canonicalize().unwrap().join("app"));
        // A symlink that stays inside is followed.
        let via_link = resolve(&clone, "inner", "Dockerfile").unwrap();
        assert_eq!(via_link, paths);
        let from_root = resolve(&clone, ".", "app/Dockerfile").unwrap();
        assert_eq!(from_root.dockerfile, paths.dockerfile);
    }

    #[test]
    fn symlinks_out_of_the_clone_are_refused() {
        let dir = tree();
        let clone = dir.path().join("src");
        let err = resolve(&clone, "up", "Dockerfile").unwrap_err();
        assert!(!err.retryable);
        assert!(
            err.message
                .contains("buildContext \"up\" leads outside the repository"),
            "{}",
            err.message
        );
        let err = resolve(&clone, "app", "Leak").unwrap_err();
        assert!(
            err.message
                .contains("dockerfilePath \"Leak\" leads outside"),
            "{}",
            err.message
        );
    }

    #[test]
    fn no_random_path_resolves_outside_the_clone() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tree();
        let clone = dir.path().join("src");
        let root = clone.canonicalize().unwrap();
        const PARTS: [&str; 8] = ["app", "up", "inner", "..", ".", "Dockerfile", "Leak", "x"];
        let path = |rng: &mut rand::rngs::StdRng| {
            let n = rng.gen_range(1..5);
            (0..n)
                .map(|_| PARTS[rng.gen_range(0..PARTS.len())])
                .collect::<Vec<_>>()
                .join("/")
        };
        for _ in 0..2_000 {
            let (context, dockerfile) = (path(&mut rng), path(&mut rng));
            if let Ok(paths) = resolve(&clone, &context, &dockerfile) {
                assert!(
                    paths.context.starts_with(&root) && paths.dockerfile.starts_with(&root),
                    "seed {seed}: {context:?} + {dockerfile:?} gave {paths:?}"
                );
            }
        }
    }

    #[test]
    fn missing_paths_say_so() {
        let dir = tree();
        let clone = dir.path().join("src");
        let err = resolve(&clone, "app", "Nope").unwrap_err();
        assert!(
            err.message.contains("there is no Dockerfile at app/Nope"),
            "{}",
            err.message
        );
        let err = resolve(&clone, "nope", "Dockerfile").unwrap_err();
        assert!(
            err.message.contains("buildContext \"nope\" does not exist"),
            "{}",
            err.message
        );
        let err = resolve(&clone, "app/Dockerfile", "Dockerfile").unwrap_err();
        assert!(err.message.contains("is not a folder"), "{}", err.message);
    }
}
