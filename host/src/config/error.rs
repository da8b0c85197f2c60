//! A config error names the file, the line and the field; [`Located`]
//! makes one for a field of some config text.

use super::locate::{self, FieldPath};
use std::fmt;
use std::path::{Path, PathBuf};

/// A config error that names the file, the line (when known) and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column, when the field could be found.
    pub position: Option<(usize, usize)>,
    /// The field, e.g. `stages[0].route.to.sum`; empty for the whole file.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Config text with its file name: where errors point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located<'a> {
    pub(crate) path: &'a Path,
    pub(crate) source: &'a str,
}

impl Located<'_> {
    /// An error about `field`, located in the text.
    pub(crate) fn error(&self, field: &FieldPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            position: locate::locate(self.source, field),
            field: field.to_string(),
            message: message.into(),
        }
    }
}
