//! CRIU's RPC schema (`criu swrk`) and its statistics images, as Rust types.
//!
//! The `.proto` files in `proto/` are crabmigrate's own, written from the
//! protocol facts (field names, numbers, types and defaults), not copied from
//! CRIU. They follow the wire format of CRIU [`CRIU_SCHEMA_VERSION`], which
//! is unchanged from 4.0 through 4.2.
//!
//! # Why proto2
//!
//! CRIU speaks proto2 with `required` fields and explicit defaults. prost
//! keeps both: [`rpc::CriuOpts::default`] has `images_dir_fd == -1` and always
//! puts it on the wire, where a proto3 zero would have pointed CRIU at the
//! caller's fd 0.
//!
//! # How it is built
//!
//! `build.rs` compiles the schema with [protox](https://docs.rs/protox), a
//! protobuf compiler written in Rust, and generates code with prost-build.
//! A fresh machine therefore needs no `protoc` and nothing is downloaded at
//! build time.
//!
//! # Layout
//!
//! The generated code lives in named modules: [`rpc`] for the swrk protocol,
//! [`stats`] for `stats-dump` / `stats-restore` and [`images`] for image
//! files. All come from the proto package `criu`, so they share one
//! generated file; the modules re-export
//! the relevant types under stable names. `prost` is re-exported so that
//! users encode and decode with the matching version.

pub use prost;

/// The CRIU release whose wire format the schema follows.
pub const CRIU_SCHEMA_VERSION: &str = "4.1.1";

mod generated {
    // Generated code: its style is prost's, not ours.
    #![allow(missing_debug_implementations, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/criu.rs"));
}

/// The `criu swrk` RPC messages (CRIU's `rpc.proto`).
pub mod rpc {
    pub use crate::generated::{
        CgroupRoot, CriuCgMode, CriuDumpResp, CriuFeatures, CriuNetworkLockMethod, CriuNotify,
        CriuOpts, CriuPageServerInfo, CriuPreDumpMode, CriuReq, CriuReqType, CriuResp,
        CriuRestoreResp, CriuVersion, CriuVethPair, ExtMountMap, InheritFd, JoinNamespace, UnixSk,
    };
}

/// CRIU's statistics images (`stats.proto`).
pub mod stats {
    pub use crate::generated::{DumpStatsEntry, RestoreStatsEntry, StatsEntry};

    /// First word of a service image such as `stats-dump`.
    pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
    /// Second word of `stats-dump` and `stats-restore`.
    pub const STATS_MAGIC: u32 = 0x5709_3306;
}

/// CRIU's image files (the parts crabmigrate reads; see `crates/images`).
pub mod images {
    pub use crate::generated::{
        CoreEntry, ExtFileEntry, FdinfoEntry, FifoEntry, FileEntry, FsEntry, InetSkEntry,
        InventoryEntry, MemfdFileEntry, MmEntry, MntEntry, PagemapEntry, PagemapHead, PipeEntry,
        PstreeEntry, RegFileEntry, TaskCoreEntry, TaskKobjIdsEntry, ThreadCoreEntry, TtyFileEntry,
        TtyInfoEntry, TtyPtyEntry, UnixSkEntry, VmaEntry,
    };

    /// First word of a regular image file.
    pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
    /// Second word of `pstree.img`.
    pub const PSTREE_MAGIC: u32 = 0x5027_3030;
}

#[cfg(test)]
mod tests {
    use super::rpc::{CriuOpts, CriuReq, CriuReqType, CriuResp};
    use prost::Message;

    #[test]
    fn images_dir_fd_defaults_to_minus_one_and_is_always_sent() {
        let opts = CriuOpts::default();
        assert_eq!(opts.images_dir_fd, -1);
        let bytes = opts.encode_to_vec();
        // field 1, varint, -1 as a ten-byte varint.
        assert_eq!(bytes[0], 0x08);
        assert_eq!(bytes.len(), 11);
        assert_eq!(opts.log_level(), 2);
        assert_eq!(opts.ghost_limit(), 0x10_0000);
        assert_eq!(opts.cpu_cap(), 0xffff_ffff);
    }

    #[test]
    fn decodes_criu_411_version_answer() {
        // Bytes of CRIU 4.1.1's VERSION answer, from the protocol notes.
        let raw = [
            0x08, 0x0a, 0x10, 0x01, 0x52, 0x06, 0x08, 0x04, 0x10, 0x01, 0x20, 0x01,
        ];
        let resp = CriuResp::decode(&raw[..]).expect("valid response");
        assert_eq!(resp.r#type(), CriuReqType::Version);
        assert!(resp.success);
        let v = resp.version.expect("version present");
        assert_eq!(
            (v.major_number, v.minor_number, v.sublevel),
            (4, 1, Some(1))
        );
        assert_eq!(v.gitid, None);
    }

    #[test]
    fn request_type_is_always_encoded() {
        let req = CriuReq {
            r#type: CriuReqType::Version as i32,
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), vec![0x08, 0x0a]);
    }
}
