//! The messages of the migration protocol and their typed exchange.
//!
//! Every message is an [`Envelope`] encoded with prost and sent as one
//! frame of the [`crate::channel`], so a message is at most
//! [`MAX_MESSAGE`] bytes. File contents travel in [`FileChunk`]s; a long
//! file list in [`Manifest`] parts. [`MessageSender`] and
//! [`MessageReceiver`] put the schema on the channel's frames.
//!
//! # Version policy
//!
//! [`PROTOCOL_VERSION`] goes in the channel's plain greeting (a peer of
//! another version is named before any key is used) and again in the
//! authenticated [`Hello`]. Fields are only ever added (with new tags),
//! never renumbered or reused; a change that an older peer would misread
//! gets a new version. An envelope without a body, and an enumeration at
//! its zero or an unknown value, are errors, never defaults.

mod messages;
mod wire;

#[cfg(test)]
mod fuzz;

use prost::Message as _;

pub use messages::*;
pub use wire::{MessageReceiver, MessageSender};

use crate::channel::ChannelError;

/// The protocol version both peers must speak.
///
/// 2: a carried byte stream (CRIU's page traffic) ends with an empty frame.
/// 3: containers (bundle, rootfs) and pre-copy rounds of content-hashed
/// chunks. 4: the channel's cipher is AES-GCM. 5: the version is greeted in
/// plain text before the handshake; strategy, workload, stream purpose and
/// steps are enumerations; manifests come in parts; health checks are
/// named by the destination's operator; `Restored` carries the measured
/// restore time.
pub const PROTOCOL_VERSION: u32 = 5;
/// The largest encoded message (one frame).
pub const MAX_MESSAGE: usize = crate::channel::MAX_PLAINTEXT;
/// The largest piece of a file in one [`FileChunk`], leaving room for the
/// path and framing.
pub const MAX_CHUNK: usize = 60 * 1024;
/// Manifest entries per [`Manifest`] part (an entry with a long path and
/// its digest stays far below 64 KiB / this).
pub const MANIFEST_PART: usize = 200;

/// Why a message could not be sent or read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
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
    #[error("the peer sent {value} as {field}, which is missing or unknown here")]
    BadEnum { field: &'static str, value: i32 },
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

/// Reads an enumeration field strictly: zero (unspecified) and unknown
/// values are errors.
pub fn enum_field<E>(field: &'static str, value: i32) -> Result<E, ProtocolError>
where
    E: TryFrom<i32> + Copy + PartialEq + Default,
{
    match E::try_from(value) {
        Ok(e) if e != E::default() => Ok(e),
        _ => Err(ProtocolError::BadEnum { field, value }),
    }
}

impl Ack {
    /// An Ack of `step`.
    pub fn of(step: Step) -> Body {
        Body::Ack(Ack { step: step as i32 })
    }
}

impl Refuse {
    /// The refused step (unspecified if the peer sent none or an unknown
    /// one: a refusal is honoured either way).
    pub fn refused_step(&self) -> Step {
        Step::try_from(self.step).unwrap_or(Step::Unspecified)
    }
}

impl HealthCheck {
    /// A check named by the destination's operator.
    pub fn named(name: &str) -> Self {
        Self {
            check: Some(Check::Named(name.to_owned())),
        }
    }

    /// A TCP port on the destination's loopback.
    pub fn tcp(port: u16) -> Self {
        Self {
            check: Some(Check::Tcp(u32::from(port))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let hello = Envelope::new(Body::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Source as i32,
            criu_version: "4.2.1".into(),
            kernel: "6.18".into(),
            hostname: "a".into(),
            post_copy: true,
            ..Default::default()
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

    #[test]
    fn enumerations_refuse_zero_and_unknown_values() {
        assert_eq!(
            enum_field::<WireStrategy>("strategy", 2).unwrap(),
            WireStrategy::PreCopy
        );
        for bad in [0, 4, -1, i32::MAX] {
            let err = enum_field::<WireStrategy>("strategy", bad).unwrap_err();
            assert!(matches!(err, ProtocolError::BadEnum { value, .. } if value == bad));
        }
        assert!(enum_field::<WorkloadKind>("workload", 0).is_err());
        assert!(enum_field::<StreamPurpose>("purpose", 3).is_err());
        let refuse = Refuse {
            step: 99,
            ..Default::default()
        };
        assert_eq!(refuse.refused_step(), Step::Unspecified);
    }

    #[test]
    fn a_full_manifest_part_fits_in_one_message() {
        let part = Envelope::new(Body::Manifest(Manifest {
            entries: (0..MANIFEST_PART)
                .map(|i| ManifestEntry {
                    path: format!("{}/{i}", "d".repeat(200)),
                    size: u64::MAX,
                    sha256: vec![0xff; 32],
                })
                .collect(),
            more: true,
        }));
        assert!(part.encode_checked().is_ok());
    }
}
