//! Where the secrets key comes from: a small [`KeyProvider`] trait (room for a KMS or a
//! vault) and the default, [`EnvKeys`]: `SPECTRO_SECRETS_KEY` holds the keys (standard
//! base64 of 32 bytes each, comma- or space-separated, the current key first) or names a file
//! that holds them (`file:PATH`, or the path of an existing file). [`KeyFile`] reads a file, and creates it with one random key (mode 0600)
//! when asked to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;

use super::seal::{random_key, secrets, Keyring};
use crate::error::Result;

/// The environment variable [`EnvKeys`] reads.
pub const KEY_VAR: &str = "SPECTRO_SECRETS_KEY";

/// Gives the engine its keyring (the current key seals, all keys open).
#[async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// The keyring, or `None` when this source has no key configured (the engine then falls
    /// back as [`EngineBuilder::secret_keys`](crate::engine::EngineBuilder::secret_keys)
    /// says). Errors name the source and the rule, never a key.
    async fn keyring(&self) -> Result<Option<Arc<Keyring>>>;
}

/// Keys from an environment variable (default `SPECTRO_SECRETS_KEY`): the keys themselves,
/// or a file holding them (`file:PATH`, or a path starting with `/` or `./` to an existing
/// file).
#[derive(Debug, Clone)]
pub struct EnvKeys {
    var: String,
}

impl Default for EnvKeys {
    fn default() -> Self {
        EnvKeys {
            var: KEY_VAR.to_string(),
        }
    }
}

impl EnvKeys {
    /// Keys from the variable `var` instead of `SPECTRO_SECRETS_KEY`.
    #[must_use]
    pub fn named(var: impl Into<String>) -> Self {
        EnvKeys { var: var.into() }
    }
}

#[async_trait]
impl KeyProvider for EnvKeys {
    async fn keyring(&self) -> Result<Option<Arc<Keyring>>> {
        let Ok(value) = std::env::var(&self.var) else {
            return Ok(None);
        };
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        // A path: `file:PATH`, or a value naming a file that exists (a base64 key may start
        // with `/`, so a value is taken as a path only when such a file is there).
        let path = value.strip_prefix("file:").or_else(|| {
            ((value.starts_with('/') || value.starts_with("./"))
                && std::path::Path::new(value).is_file())
            .then_some(value)
        });
        match path {
            Some(p) => KeyFile::new(p).keyring().await.and_then(|k| {
                k.map(Some).ok_or_else(|| {
                    secrets(format!("{}: the key file {p} does not exist", self.var))
                })
            }),
            None => Ok(Some(Arc::new(Keyring::parse(&self.var, value)?))),
        }
    }
}

/// Keys from a file (one base64 key per line, the current one first; `#` comments).
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
    create: bool,
}

impl KeyFile {
    /// Reads `path` (no key when it does not exist).
    #[must_use]
    pub fn new(path: impl AsRef<Path>) -> Self {
        KeyFile {
            path: path.as_ref().to_path_buf(),
            create: false,
        }
    }

    /// Reads `path`, creating it with one random key (mode 0600) when it does not exist.
    #[must_use]
    pub fn create_if_missing(path: impl AsRef<Path>) -> Self {
        KeyFile {
            path: path.as_ref().to_path_buf(),
            create: true,
        }
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl KeyProvider for KeyFile {
    async fn keyring(&self) -> Result<Option<Arc<Keyring>>> {
        let origin = self.path.display().to_string();
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(Arc::new(Keyring::parse(&origin, &text)?))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.create => {
                let key = random_key()?;
                let text = format!(
                    "# spectro secrets key (AES-256-GCM): the current key first, older keys after it\n{}\n",
                    base64::engine::general_purpose::STANDARD.encode(key)
                );
                write_private(&self.path, &text)
                    .map_err(|e| secrets(format!("{origin}: cannot create the key file: {e}")))?;
                Ok(Some(Arc::new(Keyring::from_keys(&[key])?)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(secrets(format!("{origin}: cannot read the key file: {e}"))),
        }
    }
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// A fixed keyring (tests, or keys the application obtained itself).
#[derive(Debug, Clone)]
pub struct StaticKeys(pub Arc<Keyring>);

#[async_trait]
impl KeyProvider for StaticKeys {
    async fn keyring(&self) -> Result<Option<Arc<Keyring>>> {
        Ok(Some(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        assert!(KeyFile::new(&path).keyring().await.unwrap().is_none());
        let made = KeyFile::create_if_missing(&path)
            .keyring()
            .await
            .unwrap()
            .unwrap();
        let read = KeyFile::new(&path).keyring().await.unwrap().unwrap();
        assert_eq!(made.ids(), read.ids());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "garbage").unwrap();
        let err = KeyFile::new(&path).keyring().await.unwrap_err();
        assert!(
            err.to_string()
                .contains("secrets.key: key 1: must be standard base64"),
            "{err}"
        );
    }
}
