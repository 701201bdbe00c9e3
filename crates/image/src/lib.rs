//! skiff's images: a content-addressed blob store, image metadata (OCI and Docker v2s2),
//! an overlay snapshotter with OCI whiteout translation, and image archives
//! (docker-archive, oci-archive, rootfs import).
//!
//! Everything here is synchronous and does not depend on the runtime: the kubelet and
//! builds share one [`content::ContentStore`] and one [`snapshot::Snapshotter`], and
//! mounting what a snapshotter returns is the caller's job ([`mount`]).

#![forbid(unsafe_code)]

pub mod content;
pub mod digest;
pub mod dockerfile;
pub mod error;
pub mod manifest;
pub mod snapshot;
pub mod unpack;

pub use content::{ContentError, ContentStore, FsContentStore};
pub use digest::Digest;
pub use error::Category;
pub use snapshot::{Mount, OverlaySnapshotter, SnapshotError, Snapshotter};
pub mod reference;
pub mod store;
pub use store::{Image, ImageError, ImageStore};
pub mod archive;
pub mod build;
pub mod distribution;
pub mod mount;
mod parallel;
