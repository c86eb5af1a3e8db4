//! The health check before the destination commits: one the agent's
//! operator defined, named by the source, or a TCP port on loopback. The
//! peer never sends a command: holding the key must not mean running
//! arbitrary shell commands here beyond what a restore already allows.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::deadlines;
use crate::protocol::{Check, HealthCheck};

/// What the source asked for, resolved against the agent's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    None,
    Command { name: String, command: String },
    Tcp(u16),
}

/// Why a requested check cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HealthRefusal {
    #[error(
        "this agent offers no health check named {0:?}; start it with --health-check {0}=COMMAND"
    )]
    Unknown(String),
    #[error("TCP port {0} is not a port")]
    BadPort(u32),
    #[error("the health check names no kind")]
    Empty,
}

/// Resolves the source's request.
pub(crate) fn resolve(
    asked: Option<&HealthCheck>,
    offered: &BTreeMap<String, String>,
) -> Result<Resolved, HealthRefusal> {
    let Some(asked) = asked else {
        return Ok(Resolved::None);
    };
    match &asked.check {
        None => Err(HealthRefusal::Empty),
        Some(Check::Named(name)) => offered
            .get(name)
            .map(|command| Resolved::Command {
                name: name.clone(),
                command: command.clone(),
            })
            .ok_or_else(|| HealthRefusal::Unknown(name.clone())),
        Some(Check::Tcp(port)) => u16::try_from(*port)
            .ok()
            .filter(|&p| p > 0)
            .map(Resolved::Tcp)
            .ok_or(HealthRefusal::BadPort(*port)),
    }
}

/// Runs the check until it passes or [`deadlines::HEALTH`] passes; `pid`
/// is the restored root's. Returns why it failed.
pub(crate) async fn run(check: &Resolved, pid: u32) -> Result<(), String> {
    if *check == Resolved::None {
        return Ok(());
    }
    let until = tokio::time::Instant::now() + deadlines::HEALTH;
    let mut last = String::new();
    while tokio::time::Instant::now() < until {
        let passed = match check {
            Resolved::None => true,
            Resolved::Command { name, command } => {
                let run = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .env("CRABMIGRATE_PID", pid.to_string())
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status();
                match tokio::time::timeout_at(until, run).await {
                    Ok(Ok(status)) if status.success() => true,
                    Ok(Ok(status)) => {
                        last = format!("check {name:?} {status}");
                        false
                    }
                    Ok(Err(e)) => {
                        last = format!("cannot run check {name:?}: {e}");
                        false
                    }
                    Err(_) => {
                        last = format!("check {name:?} did not finish");
                        false
                    }
                }
            }
            Resolved::Tcp(port) => match TcpStream::connect(("127.0.0.1", *port)).await {
                Ok(_) => true,
                Err(e) => {
                    last = format!("port {port} does not accept: {e}");
                    false
                }
            },
        };
        if passed {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{last} (for {} s)", deadlines::HEALTH.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offered_checks_resolve() {
        let mut offered = BTreeMap::new();
        offered.insert("ready".to_owned(), "true".to_owned());
        assert_eq!(resolve(None, &offered), Ok(Resolved::None));
        assert_eq!(
            resolve(Some(&HealthCheck::named("ready")), &offered),
            Ok(Resolved::Command {
                name: "ready".into(),
                command: "true".into()
            })
        );
        let unknown = resolve(Some(&HealthCheck::named("rm -rf /")), &offered).unwrap_err();
        assert!(unknown.to_string().contains("--health-check"), "{unknown}");
        assert_eq!(
            resolve(Some(&HealthCheck::tcp(80)), &offered),
            Ok(Resolved::Tcp(80))
        );
        let bad = HealthCheck {
            check: Some(Check::Tcp(70_000)),
        };
        assert_eq!(
            resolve(Some(&bad), &offered),
            Err(HealthRefusal::BadPort(70_000))
        );
        assert_eq!(
            resolve(Some(&HealthCheck { check: None }), &offered),
            Err(HealthRefusal::Empty)
        );
    }

    #[tokio::test]
    async fn a_command_passes_or_fails_with_its_status() {
        let ok = Resolved::Command {
            name: "pid".into(),
            command: r#"[ "$CRABMIGRATE_PID" = 42 ]"#.into(),
        };
        assert_eq!(run(&ok, 42).await, Ok(()));
        assert_eq!(run(&Resolved::None, 1).await, Ok(()));
    }
}
