//! A secret setting: given as a value, or as the path of a file that holds
//! it (a mounted Kubernetes Secret). A file is read when the link is built
//! and again on every reload (SIGHUP), so a rotated Secret needs no restart.

use std::path::PathBuf;

use super::LinkError;

/// Where a secret comes from. Its value is never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Value(String),
    /// A file; its content, without the trailing line break editors and
    /// `kubectl create secret --from-file` leave, is the value.
    File(PathBuf),
}

impl Secret {
    /// The value given, or else the file's; `None` when neither is.
    pub fn either(value: Option<&str>, file: Option<&PathBuf>) -> Option<Self> {
        match (file, value) {
            (Some(file), _) => Some(Self::File(file.clone())),
            (None, Some(value)) => Some(Self::Value(value.to_owned())),
            (None, None) => None,
        }
    }

    /// The value now: read from the file each time it is asked for.
    /// `setting` names the setting in an error (never the value).
    pub fn read(&self, setting: &'static str) -> Result<String, LinkError> {
        match self {
            Self::Value(value) => Ok(value.clone()),
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    LinkError::Setting(setting, format!("cannot read the file {}: {e}", path.display()))
                })?;
                let value = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
                if value.is_empty() {
                    return Err(LinkError::Setting(setting, format!("the file {} is empty", path.display())));
                }
                Ok(value.to_owned())
            }
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Secret(value)"),
            Self::File(path) => write!(f, "Secret(file {})", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_secret_loses_its_trailing_line_break_and_is_never_printed() {
        let path = std::env::temp_dir().join(format!("slotgate-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cret\r\n").unwrap();
        let secret = Secret::File(path.clone());
        assert_eq!(secret.read("X").unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(secret.read("X").unwrap_err().to_string().contains("is empty"));
        std::fs::remove_file(&path).unwrap();
        let missing = secret.read("X").unwrap_err().to_string();
        assert!(missing.starts_with("X: cannot read the file"), "{missing}");
        assert_eq!(format!("{:?}", Secret::Value("s3cret".into())), "Secret(value)");
        assert_eq!(Secret::either(Some("v"), Some(&path)), Some(Secret::File(path)), "the file wins");
    }
}
