//! The messages of the migration protocol.
//!
//! Every message is an [`Envelope`] encoded with prost and sent as one
//! encrypted frame of the [`crate::channel::SecureChannel`], so a message is
//! at most [`MAX_MESSAGE`] bytes. File contents travel in [`FileChunk`]s.
//!
//! # Version policy
//!
//! [`PROTOCOL_VERSION`] is sent in [`Hello`] by both sides. A peer refuses a
//! different major version with [`Refuse`]. Fields are only ever added (with
//! new tags), never renumbered or reused, and a receiver ignores fields it
//! does not know; a change that an older peer would misread gets a new
//! version. An envelope without a body — a zero or unknown message type — is
//! an error, never a default.

use prost::Message as _;

/// The protocol version both peers must speak.
///
/// 2: a carried byte stream (CRIU's page traffic) ends with an empty frame;
/// a version-1 peer never sends it, so its every stream would look broken.
/// 3: containers (bundle, rootfs) and pre-copy rounds of content-hashed
/// chunks ([`RoundStart`], [`ChunkBatch`], [`FileIndex`]).
/// 4: the channel's cipher is AES-GCM (was ChaCha20-Poly1305). A peer of
/// version 3 or older fails the handshake itself, which reads like a wrong
/// key: run the same crabmigrate release on both hosts.
pub const PROTOCOL_VERSION: u32 = 4;
/// The largest encoded message (one Noise transport message minus its tag).
pub const MAX_MESSAGE: usize = crate::channel::MAX_PLAINTEXT;
/// The largest piece of a file in one [`FileChunk`], leaving room for the
/// path and framing.
pub const MAX_CHUNK: usize = 60 * 1024;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the peer sent a message that is not valid protobuf")]
    Decode(#[source] prost::DecodeError),
    #[error("the peer sent a message of no or unknown type")]
    Empty,
    #[error("a message of {0} bytes is larger than the limit of {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("the peer sent {got} where {expected} was due")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
}

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

impl Body {
    /// The message type's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "Hello",
            Self::Refuse(_) => "Refuse",
            Self::FileChunk(_) => "FileChunk",
            Self::Manifest(_) => "Manifest",
            Self::Abort(_) => "Abort",
            Self::Ack(_) => "Ack",
            Self::Prepare(_) => "Prepare",
            Self::StreamOpen(_) => "StreamOpen",
            Self::Restored(_) => "Restored",
            Self::Commit(_) => "Commit",
            Self::Committed(_) => "Committed",
            Self::PagesReady(_) => "PagesReady",
            Self::RoundStart(_) => "RoundStart",
            Self::ChunkBatch(_) => "ChunkBatch",
            Self::FileIndex(_) => "FileIndex",
        }
    }
}

/// The first message of each side.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    #[prost(uint32, tag = "1")]
    pub protocol_version: u32,
    /// "source" or "destination".
    #[prost(string, tag = "2")]
    pub role: String,
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
}

/// A refusal, with the reason a user can act on.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refuse {
    #[prost(string, tag = "1")]
    pub reason: String,
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

/// The files of a transfer with their sizes and digests.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Manifest {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<ManifestEntry>,
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
    #[prost(string, tag = "1")]
    pub step: String,
}

/// What the source asks the destination to receive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Prepare {
    /// Names this migration; data connections quote it.
    #[prost(string, tag = "1")]
    pub session: String,
    /// "process" or "container".
    #[prost(string, tag = "2")]
    pub workload: String,
    /// The container's ID on the destination (containers only).
    #[prost(string, tag = "3")]
    pub id: String,
    /// "stop-copy", "pre-copy" or "post-copy".
    #[prost(string, tag = "4")]
    pub strategy: String,
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
    /// A command the destination runs (`sh -c`) once the workload runs
    /// there; the migration commits only if it succeeds.
    #[prost(string, tag = "9")]
    pub health_cmd: String,
    /// A TCP port on the destination's loopback that must accept a
    /// connection once the workload runs there (0: none).
    #[prost(uint32, tag = "10")]
    pub health_tcp: u32,
}

/// The first message on a data connection: which session's stream it is.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamOpen {
    #[prost(string, tag = "1")]
    pub session: String,
    /// "pages" (stop-copy page server) or "lazy" (post-copy page requests).
    #[prost(string, tag = "2")]
    pub purpose: String,
}

/// The destination restored the workload; it waits, stopped, for Commit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Restored {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    /// Microseconds CRIU spent restoring.
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

impl Envelope {
    /// Wraps a body.
    pub fn new(body: Body) -> Self {
        Self { body: Some(body) }
    }

    /// Encodes, refusing a message over the size limit.
    pub fn encode_checked(&self) -> Result<Vec<u8>, ProtocolError> {
        let len = self.encoded_len();
        if len > MAX_MESSAGE {
            return Err(ProtocolError::TooLarge(len));
        }
        Ok(self.encode_to_vec())
    }

    /// Decodes one message; a missing (zero or unknown) body is an error.
    pub fn decode_checked(bytes: &[u8]) -> Result<Body, ProtocolError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(ProtocolError::TooLarge(bytes.len()));
        }
        Envelope::decode(bytes)
            .map_err(ProtocolError::Decode)?
            .body
            .ok_or(ProtocolError::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let hello = Envelope::new(Body::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: "source".into(),
            criu_version: "4.1.1".into(),
            kernel: "6.18".into(),
            hostname: "a".into(),
            post_copy: true,
            post_copy_why: String::new(),
        }));
        let bytes = hello.encode_checked().unwrap();
        assert_eq!(
            Envelope::decode_checked(&bytes).unwrap(),
            hello.body.clone().unwrap()
        );
        // Zero-length or unknown-type messages have no body.
        assert!(matches!(
            Envelope::decode_checked(&[]),
            Err(ProtocolError::Empty)
        ));
        let unknown = [0xfa, 0x01, 0x00]; // field 31, empty message
        assert!(matches!(
            Envelope::decode_checked(&unknown),
            Err(ProtocolError::Empty)
        ));
        assert!(matches!(
            Envelope::decode_checked(&[0xff, 0xff]),
            Err(ProtocolError::Decode(_))
        ));
        let big = Envelope::new(Body::FileChunk(FileChunk {
            path: "x".into(),
            offset: 0,
            data: vec![0; MAX_MESSAGE],
        }));
        assert!(matches!(
            big.encode_checked(),
            Err(ProtocolError::TooLarge(_))
        ));
        let chunk = Envelope::new(Body::FileChunk(FileChunk {
            path: "pages-1.img".repeat(20),
            offset: u64::MAX,
            data: vec![7; MAX_CHUNK],
        }));
        assert!(
            chunk.encode_checked().is_ok(),
            "a full chunk fits in one message"
        );
    }
}
