//! The source's connections to the agent: the control channel, data
//! connections of the session, and what the destination says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::channel::{BoxStream, SecureChannel};
use crate::deadlines;
use crate::key::Key;
use crate::meter::Meter;
use crate::protocol::{
    Abort, Body, MessageReceiver, MessageSender, Refuse, Step, StreamOpen, StreamPurpose,
    PROTOCOL_VERSION,
};

use super::{MigrateError, Refusal};

/// Opens byte streams to the agent.
pub trait Dialer: std::fmt::Debug + Send + Sync {
    /// A new connection.
    fn dial(&self) -> Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + Send + '_>>;
    /// The agent's address, for messages.
    fn address(&self) -> &str;
}

/// TCP to `HOST:PORT`, tuned for a dead peer to be noticed.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    to: String,
}

impl TcpDialer {
    pub fn new(to: &str) -> Self {
        Self { to: to.to_owned() }
    }
}

impl Dialer for TcpDialer {
    fn dial(&self) -> Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + Send + '_>> {
        Box::pin(async move {
            let socket = crate::transfer::connect(&self.to).await?;
            Ok(Box::new(socket) as BoxStream)
        })
    }

    fn address(&self) -> &str {
        &self.to
    }
}

/// The error for `got` where `expected` was due.
pub(crate) fn expect(expected: &'static str, got: Body) -> MigrateError {
    match got {
        Body::Refuse(r) => MigrateError::Refused(refusal(r)),
        Body::Abort(a) => MigrateError::Aborted(a.cause),
        other => MigrateError::Unexpected {
            expected,
            got: other.name(),
        },
    }
}

pub(crate) fn refusal(r: Refuse) -> Refusal {
    Refusal {
        step: r.refused_step(),
        known_failure: (!r.known_failure.is_empty()).then(|| r.known_failure.clone()),
        reason: r.reason,
    }
}

/// The control connection and what data connections need.
#[derive(Debug)]
pub(crate) struct Link {
    pub tx: MessageSender,
    pub rx: MessageReceiver,
    dialer: Arc<dyn Dialer>,
    key: Key,
    pub session: String,
    /// Content bytes sent on every connection.
    pub wire: Meter,
}

impl Link {
    /// Connects the control channel.
    pub async fn connect(dialer: Arc<dyn Dialer>, key: &Key) -> Result<Self, MigrateError> {
        let stream = dialer
            .dial()
            .await
            .map_err(|e| MigrateError::Connect(dialer.address().to_owned(), e))?;
        let (tx, rx) = SecureChannel::connect(stream, key, PROTOCOL_VERSION)
            .await
            .map_err(crate::protocol::ProtocolError::from)?
            .split();
        Ok(Self {
            tx: MessageSender::new(tx),
            rx: MessageReceiver::new(rx, deadlines::MESSAGE),
            dialer,
            key: key.clone(),
            session: String::new(),
            wire: Meter::default(),
        })
    }

    /// The agent's address.
    pub fn to(&self) -> &str {
        self.dialer.address()
    }

    /// Opens a data connection of this session for `purpose`.
    pub async fn data(&self, purpose: StreamPurpose) -> Result<SecureChannel, MigrateError> {
        let stream = self
            .dialer
            .dial()
            .await
            .map_err(|e| MigrateError::Connect(self.to().to_owned(), e))?;
        let mut data = SecureChannel::connect(stream, &self.key, PROTOCOL_VERSION)
            .await
            .map_err(crate::protocol::ProtocolError::from)?;
        let open = crate::protocol::Envelope::new(Body::StreamOpen(StreamOpen {
            session: self.session.clone(),
            purpose: purpose as i32,
        }))
        .encode_checked()?;
        data.send_frame(&open)
            .await
            .map_err(crate::protocol::ProtocolError::from)?;
        Ok(data)
    }

    /// The next message within the receiver's deadline.
    pub async fn next(&mut self) -> Result<Body, MigrateError> {
        Ok(self.rx.recv().await?)
    }

    /// The next message within `deadline`; past it, a timeout.
    pub async fn next_within(&mut self, deadline: Duration) -> Result<Body, MigrateError> {
        match self.rx.recv_within(deadline).await {
            Err(crate::protocol::ProtocolError::Channel(crate::channel::ChannelError::Idle(d))) => {
                Err(MigrateError::Timeout(d))
            }
            other => Ok(other?),
        }
    }

    /// Waits for an Ack of `step`.
    pub async fn expect_ack(&mut self, step: Step) -> Result<(), MigrateError> {
        match self.next().await? {
            Body::Ack(a) if a.step == step as i32 => Ok(()),
            other => Err(expect("Ack", other)),
        }
    }

    /// Tells the destination the source gives up (best effort).
    pub async fn abort(&mut self, cause: &str) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.tx.send(Body::Abort(Abort {
                cause: cause.into(),
            })),
        )
        .await;
    }

    /// A refusal the destination sent but the source has not read yet (it
    /// was busy sending), within a moment.
    pub async fn destination_cause(&mut self) -> Option<Refusal> {
        loop {
            match self.rx.recv_within(Duration::from_secs(2)).await {
                Ok(Body::Refuse(r)) => return Some(refusal(r)),
                Ok(Body::Abort(a)) => {
                    return Some(Refusal {
                        step: Step::Unspecified,
                        reason: format!("it gave up: {}", a.cause),
                        known_failure: None,
                    })
                }
                // An Ack of an earlier step may come first.
                Ok(Body::Ack(_)) => continue,
                _ => return None,
            }
        }
    }
}
