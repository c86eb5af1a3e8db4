//! runc's JSON log lines, `{"level":"error","msg":"...","time":"..."}`:
//! containerd's shim and Podman read the last error-level `msg` of the
//! `--log` file to tell the user why the runtime failed.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter.
#[derive(Debug, Clone, Copy)]
pub struct RuncJson;

/// The message, then the other fields as ` key=value`.
#[derive(Default)]
struct Message(String, String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value}", field.name());
        }
    }
}

impl<S, N> FormatEvent<S, N> for RuncJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = Message::default();
        event.record(&mut message);
        let line = serde_json::json!({
            "level": event.metadata().level().as_str().to_ascii_lowercase(),
            "msg": format!("{}{}", message.0, message.1),
            "time": humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        });
        writeln!(writer, "{line}")
    }
}
