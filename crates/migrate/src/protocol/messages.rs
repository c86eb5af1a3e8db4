//! The message types, as prost structs. Tags are never renumbered or
//! reused; enumerations start at an `Unspecified` zero that every receiver
//! refuses, so a field a peer forgot is an error, never a default.

/// One protocol message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(
        oneof = "Body",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15"
    )]
    pub body: Option<Body>,
}

/// The message types. Tag 0 does not exist: a message without a body is
/// refused.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    #[prost(message, tag = "1")]
    Hello(Hello),
    #[prost(message, tag = "2")]
    Refuse(Refuse),
    #[prost(message, tag = "3")]
    FileChunk(FileChunk),
    #[prost(message, tag = "4")]
    Manifest(Manifest),
    #[prost(message, tag = "5")]
    Abort(Abort),
    #[prost(message, tag = "6")]
    Ack(Ack),
    #[prost(message, tag = "7")]
    Prepare(Prepare),
    #[prost(message, tag = "8")]
    StreamOpen(StreamOpen),
    #[prost(message, tag = "9")]
    Restored(Restored),
    #[prost(message, tag = "10")]
    Commit(Commit),
    #[prost(message, tag = "11")]
    Committed(Committed),
    #[prost(message, tag = "12")]
    PagesReady(PagesReady),
    #[prost(message, tag = "13")]
    RoundStart(RoundStart),
    #[prost(message, tag = "14")]
    ChunkBatch(ChunkBatch),
    #[prost(message, tag = "15")]
    FileIndex(FileIndex),
}

/// Which side a [`Hello`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Role {
    Unspecified = 0,
    Source = 1,
    Destination = 2,
}

/// How memory moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WireStrategy {
    Unspecified = 0,
    StopCopy = 1,
    PreCopy = 2,
    PostCopy = 3,
}

/// What moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WorkloadKind {
    Unspecified = 0,
    Process = 1,
    Container = 2,
}

/// What a data connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StreamPurpose {
    Unspecified = 0,
    /// The source's dump to the destination's page server (stop-copy).
    Pages = 1,
    /// Page requests and pages between the lazy-pages ends (post-copy).
    Lazy = 2,
}

/// A step of the migration: what an [`Ack`] confirms or a [`Refuse`]
/// refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Step {
    Unspecified = 0,
    Hello = 1,
    Prepare = 2,
    Cpuinfo = 3,
    Bundle = 4,
    /// The end of a file list (the sender's marker).
    Files = 5,
    Images = 6,
    Round = 7,
    Pages = 8,
    Restore = 9,
    Commit = 10,
    Health = 11,
    LazyPages = 12,
}

impl Step {
    /// The step in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "an unnamed step",
            Self::Hello => "the greeting",
            Self::Prepare => "the preparation",
            Self::Cpuinfo => "the CPU check",
            Self::Bundle => "the bundle check",
            Self::Files => "a file transfer",
            Self::Images => "the images",
            Self::Round => "a pre-copy round",
            Self::Pages => "the page stream",
            Self::Restore => "the restore",
            Self::Commit => "the commit",
            Self::Health => "the health check",
            Self::LazyPages => "the lazy page transfer",
        }
    }
}

/// The first message of each side.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// The same version the greeting carried (checked twice: the greeting
    /// is plain text, this is authenticated).
    #[prost(uint32, tag = "1")]
    pub protocol_version: u32,
    #[prost(enumeration = "Role", tag = "2")]
    pub role: i32,
    /// CRIU version as `major.minor.sublevel`.
    #[prost(string, tag = "3")]
    pub criu_version: String,
    /// `uname -r`.
    #[prost(string, tag = "4")]
    pub kernel: String,
    #[prost(string, tag = "5")]
    pub hostname: String,
    /// Whether this host can take part in post-copy (lazy pages).
    #[prost(bool, tag = "6")]
    pub post_copy: bool,
    /// Why not, when it cannot.
    #[prost(string, tag = "7")]
    pub post_copy_why: String,
    /// Destination: the most files one transfer may hold.
    #[prost(uint32, tag = "8")]
    pub max_files: u32,
    /// Destination: the health checks its operator allows, by name.
    #[prost(string, repeated, tag = "9")]
    pub health_checks: Vec<String>,
}

/// A refusal, with the reason a user can act on.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refuse {
    #[prost(string, tag = "1")]
    pub reason: String,
    /// The step refused.
    #[prost(enumeration = "Step", tag = "2")]
    pub step: i32,
    /// A failure of CRIU that crabmigrate recognised (`criu_rpc::KnownFailure`,
    /// kebab-case), empty if none; its remedy is part of `reason`.
    #[prost(string, tag = "3")]
    pub known_failure: String,
}

/// A piece of a file, relative to the transfer's root.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileChunk {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// The files of a transfer with their sizes and digests. A long list is
/// sent in parts: every part but the last says `more`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Manifest {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<ManifestEntry>,
    #[prost(bool, tag = "2")]
    pub more: bool,
}

/// One file of a [`Manifest`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ManifestEntry {
    /// A plain relative name: no `..`, not absolute.
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// sha256 of the content.
    #[prost(bytes = "vec", tag = "3")]
    pub sha256: Vec<u8>,
}

/// The sender gives up; the receiver rolls back.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Abort {
    #[prost(string, tag = "1")]
    pub cause: String,
}

/// A step went well.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(enumeration = "Step", tag = "1")]
    pub step: i32,
}

/// A health check the destination runs once the workload runs there,
/// before it commits.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheck {
    #[prost(oneof = "Check", tags = "1, 2")]
    pub check: Option<Check>,
}

/// The kinds of [`HealthCheck`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Check {
    /// A check the destination's operator defined (`agent --health-check
    /// NAME=COMMAND`), by name: the peer never sends a command.
    #[prost(string, tag = "1")]
    Named(String),
    /// A TCP port on the destination's loopback that must accept.
    #[prost(uint32, tag = "2")]
    Tcp(u32),
}

/// What the source asks the destination to receive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Prepare {
    /// Names this migration (16 hex digits); data connections quote it.
    #[prost(string, tag = "1")]
    pub session: String,
    #[prost(enumeration = "WorkloadKind", tag = "2")]
    pub workload: i32,
    /// The container's ID on the destination (containers only).
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(enumeration = "WireStrategy", tag = "4")]
    pub strategy: i32,
    /// Both hosts see the bundle at `bundle_path`: it is not sent.
    #[prost(bool, tag = "5")]
    pub shared_rootfs: bool,
    /// The bundle's path on the source (used as is with `shared_rootfs`).
    #[prost(string, tag = "6")]
    pub bundle_path: String,
    #[prost(bool, tag = "7")]
    pub tcp_established: bool,
    /// An upper bound of what will be sent, for the space check.
    #[prost(uint64, tag = "8")]
    pub bytes_estimate: u64,
    /// Checked once the workload runs on the destination (none: absent).
    #[prost(message, optional, tag = "9")]
    pub health: Option<HealthCheck>,
    /// An upper bound of the image files the dump will write (CRIU writes
    /// several per task and thread), checked before anything freezes.
    #[prost(uint32, tag = "10")]
    pub files_estimate: u32,
}

/// The first message on a data connection: which session's stream it is.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamOpen {
    #[prost(string, tag = "1")]
    pub session: String,
    #[prost(enumeration = "StreamPurpose", tag = "2")]
    pub purpose: i32,
}

/// The destination restored the workload; it waits, stopped, for Commit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Restored {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    /// Microseconds from the start of the restore to the restored tree
    /// held before it runs, measured on the destination.
    #[prost(uint64, tag = "2")]
    pub restore_time_us: u64,
}

/// The source's decision: run on the destination.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Commit {}

/// The destination runs the workload; the source may now end its copy.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Committed {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
}

/// The destination's page server is ready for the source's stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PagesReady {}

/// Pre-copy: a round of content-hashed chunks begins. A round that is not
/// the last carries [`ChunkBatch`]es and ends with an [`Ack`]; the last one
/// carries a [`Manifest`], then batches and [`FileIndex`]es, then an Ack.
/// In that manifest a file's `sha256` is the digest of its chunks' digests
/// in order ([`crate::chunks::digest_of_chunks`]): each chunk is checked on
/// arrival, so no side hashes the data twice.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RoundStart {
    /// 1 for the first round.
    #[prost(uint32, tag = "1")]
    pub round: u32,
    /// The final round: the workload is frozen and the files are complete.
    #[prost(bool, tag = "2")]
    pub last: bool,
}

/// Chunks the destination has not seen yet, each named by its sha256.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkBatch {
    /// 32 bytes per chunk.
    #[prost(bytes = "vec", tag = "1")]
    pub digests: Vec<u8>,
    /// The length of each chunk (at most [`crate::chunks::CHUNK`]).
    #[prost(uint32, repeated, tag = "2")]
    pub lengths: Vec<u32>,
    /// The chunks, one after the other.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// A piece of a file's chunk list: chunk `first` onwards, by digest.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileIndex {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(uint64, tag = "2")]
    pub first: u64,
    /// 32 bytes per chunk.
    #[prost(bytes = "vec", tag = "3")]
    pub digests: Vec<u8>,
}
