//! OCI hooks: programs run at lifecycle points with the container's state
//! as JSON on standard input.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;
use serde::Serialize;

/// The state a hook reads on stdin (OCI runtime spec "state").
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: &'a str,
    pub pid: u32,
    pub bundle: &'a std::path::Path,
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot run the {stage} hook {path}")]
    Start {
        stage: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {stage} hook {path} failed ({status})")]
    Failed {
        stage: &'static str,
        path: PathBuf,
        status: String,
    },
    #[error("the {stage} hook {path} did not finish within {timeout} s and was killed")]
    TimedOut {
        stage: &'static str,
        path: PathBuf,
        timeout: u64,
    },
}

/// Runs `hooks` of `stage` in order; the first failure stops them.
pub fn run(stage: &'static str, hooks: &[Hook], state: &HookState<'_>) -> Result<(), HookError> {
    let input = serde_json::to_vec(state).unwrap_or_default();
    for hook in hooks {
        run_one(stage, hook, &input)?;
    }
    Ok(())
}

fn run_one(stage: &'static str, hook: &Hook, input: &[u8]) -> Result<(), HookError> {
    let path = hook.path().clone();
    let mut cmd = Command::new(&path);
    if let Some(args) = hook.args() {
        // args[0] is the program's name, as in execve.
        if let Some((name, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, name);
            cmd.args(rest);
        }
    }
    if let Some(env) = hook.env() {
        cmd.env_clear();
        cmd.envs(env.iter().filter_map(|kv| kv.split_once('=')));
    }
    cmd.stdin(Stdio::piped());
    tracing::info!(stage, path = %path.display(), "running hook");
    let mut child = cmd.spawn().map_err(|source| HookError::Start {
        stage,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(input);
    }
    let limit = hook
        .timeout()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0);
    let until = limit.map(|t| Instant::now() + Duration::from_secs(t));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if until.is_none_or(|u| Instant::now() < u) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::TimedOut {
                    stage,
                    path,
                    timeout: limit.unwrap_or(0),
                });
            }
            Err(source) => {
                return Err(HookError::Start {
                    stage,
                    path,
                    source,
                })
            }
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            stage,
            path,
            status: status.to_string(),
        })
    }
}
