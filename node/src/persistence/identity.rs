//! Whose a data dir is: the format it is written in, the cluster and the
//! node it belongs to. A node refuses a data dir that is not its own.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use thiserror::Error;

/// The on-disk format this build writes and reads. A data dir of a newer
/// format is refused (an older build must not misread it).
pub const FORMAT_VERSION: u32 = 1;

/// Whose a data dir is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDirIdentity {
    /// [`FORMAT_VERSION`] of the build that created it.
    pub format: u32,
    /// The cluster: the SHA-256 of its CA certificate, or `standalone`.
    pub cluster: String,
    /// The node: the name in its certificate, or its configured node id.
    pub node: String,
}

/// The data dir cannot be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// It belongs to another cluster.
    #[error("--data-dir {dir}: it belongs to another cluster (CA {found}, this node's is {expected}); use an empty directory")]
    OtherCluster {
        /// The data dir.
        dir: PathBuf,
        /// Its cluster.
        found: String,
        /// This node's.
        expected: String,
    },
    /// It belongs to another node of the cluster.
    #[error("--data-dir {dir}: it belongs to node {found:?}, this node is {expected:?}; use that node's own directory")]
    OtherNode {
        /// The data dir.
        dir: PathBuf,
        /// Its node.
        found: String,
        /// This node.
        expected: String,
    },
    /// It was written by a newer build.
    #[error("--data-dir {dir}: format {found} was written by a newer geocache (this one reads format {supported})")]
    NewerFormat {
        /// The data dir.
        dir: PathBuf,
        /// Its format.
        found: u32,
        /// This build's.
        supported: u32,
    },
    /// A file in it is damaged.
    #[error("--data-dir {dir}: {file} is damaged ({detail}); restore it from a backup, or move the directory away to start empty")]
    Corrupt {
        /// The data dir.
        dir: PathBuf,
        /// The file, as precisely as the storage engine says.
        file: String,
        /// What is wrong with it.
        detail: String,
    },
    /// It could not be opened or read.
    #[error("--data-dir {dir}: {detail}")]
    Io {
        /// The data dir.
        dir: PathBuf,
        /// What failed.
        detail: String,
    },
}

impl DataDirIdentity {
    /// Checks that a data dir written as `self` may be used by `me`.
    ///
    /// # Errors
    ///
    /// [`DataDirError`] naming what differs.
    pub fn check(&self, me: &DataDirIdentity, dir: &std::path::Path) -> Result<(), DataDirError> {
        let dir = dir.to_path_buf();
        if self.format > FORMAT_VERSION {
            return Err(DataDirError::NewerFormat { dir, found: self.format, supported: FORMAT_VERSION });
        }
        if self.cluster != me.cluster {
            return Err(DataDirError::OtherCluster {
                dir,
                found: self.cluster.clone(),
                expected: me.cluster.clone(),
            });
        }
        if self.node != me.node {
            return Err(DataDirError::OtherNode { dir, found: self.node.clone(), expected: me.node.clone() });
        }
        Ok(())
    }
}
