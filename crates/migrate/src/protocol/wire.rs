//! Typed messages over the channel's frames.

use std::time::Duration;

use super::{Body, Envelope, ProtocolError};
use crate::channel::{SecureReceiver, SecureSender};

/// Sends protocol messages, one per frame.
#[derive(Debug)]
pub struct MessageSender {
    frames: SecureSender,
}

/// Receives protocol messages, each within the receiver's deadline.
#[derive(Debug)]
pub struct MessageReceiver {
    frames: SecureReceiver,
}

impl MessageSender {
    pub fn new(frames: SecureSender) -> Self {
        Self { frames }
    }

    /// Sends one message.
    pub async fn send(&mut self, body: Body) -> Result<(), ProtocolError> {
        let bytes = Envelope::new(body).encode_checked()?;
        self.frames.send_frame(&bytes).await?;
        Ok(())
    }

    /// Shuts the sending side down.
    pub async fn shutdown(&mut self) -> Result<(), ProtocolError> {
        Ok(self.frames.shutdown().await?)
    }

    /// The frames underneath.
    pub fn into_inner(self) -> SecureSender {
        self.frames
    }
}

impl MessageReceiver {
    /// A receiver whose every receive waits at most `deadline`.
    pub fn new(mut frames: SecureReceiver, deadline: Duration) -> Self {
        frames.set_deadline(Some(deadline));
        Self { frames }
    }

    /// The next message, within the deadline.
    pub async fn recv(&mut self) -> Result<Body, ProtocolError> {
        let bytes = self.frames.recv_frame().await?;
        Envelope::decode_checked(&bytes)
    }

    /// The next message, within `deadline` this once.
    pub async fn recv_within(&mut self, deadline: Duration) -> Result<Body, ProtocolError> {
        let bytes = self.frames.recv_frame_within(Some(deadline)).await?;
        Envelope::decode_checked(&bytes)
    }

    /// The deadline of every receive.
    pub fn deadline(&self) -> Duration {
        self.frames.deadline().unwrap_or(Duration::MAX)
    }

    /// The frames underneath.
    pub fn into_inner(self) -> SecureReceiver {
        self.frames
    }
}
