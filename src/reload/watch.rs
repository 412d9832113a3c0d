//! The optional file watch: the config file and the key files it names,
//! read and hashed every `reload.watch_interval_ms`.
//!
//! Polling the contents (not inotify, not mtimes) sees every way a file is
//! replaced: an editor's rename, a Kubernetes ConfigMap or Secret's
//! symlink swap, a write within the same second. The files are small.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;

/// The files whose change triggers a reload: the config file (if any) and
/// every key file `config` names.
pub fn watched(source: Option<&Path>, config: &Config) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = source.map(Path::to_path_buf).into_iter().collect();
    paths.extend(config.upstream.api_key_file.clone());
    paths.extend(
        (config.upstream.credentials.values()).filter_map(|source| source.key_file.clone()),
    );
    paths.extend(config.auth.admin_key_file.clone());
    paths
}

/// A digest of the files' names and contents; a missing or unreadable
/// file counts as its error kind, so its return is a change too.
pub fn fingerprint(paths: &[PathBuf]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for path in paths {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        match std::fs::read(path) {
            Ok(bytes) => {
                hasher.update([1]);
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(&bytes);
            }
            Err(error) => {
                hasher.update([2]);
                hasher.update(format!("{:?}", error.kind()).as_bytes());
            }
        }
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_change_of_content_or_presence_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        let paths = vec![file.clone()];
        let missing = fingerprint(&paths);
        std::fs::write(&file, "[retry]\nmax_attempts = 2\n").unwrap();
        let first = fingerprint(&paths);
        assert_ne!(first, missing);
        assert_eq!(fingerprint(&paths), first, "same content, same print");
        std::fs::write(&file, "[retry]\nmax_attempts = 3\n").unwrap();
        assert_ne!(fingerprint(&paths), first);
    }

    #[test]
    fn key_files_named_by_the_config_are_watched() {
        let mut config = Config::default();
        config.upstream.api_key_file = Some("/run/secrets/key".into());
        config.auth.admin_key_file = Some("/run/secrets/admin".into());
        let paths = watched(Some(Path::new("/etc/gw.toml")), &config);
        assert_eq!(
            paths,
            [
                PathBuf::from("/etc/gw.toml"),
                "/run/secrets/key".into(),
                "/run/secrets/admin".into()
            ]
        );
    }
}
