//! `crabmigrate agent`, `crabmigrate migrate` and `crabmigrate recover`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use crabmigrate_migrate::agent::{Agent, AgentOptions, Limits};
use crabmigrate_migrate::criu_port::CriuCheckpointer;
use crabmigrate_migrate::events::{Event, Events, Observer};
use crabmigrate_migrate::interrupt::Interrupt;
use crabmigrate_migrate::key::Key;
use crabmigrate_migrate::port::Workload;
use crabmigrate_migrate::recover::Record;
use crabmigrate_migrate::source::{self, Health, MigrateRequest, PreCopyLimits, Strategy};

use crate::cli::{AgentArgs, Global, MigrateArgs, RecoverArgs, StrategyArg};

/// The exit status of a migration in doubt (the source is kept stopped).
const IN_DOUBT: u8 = 3;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn agent(global: &Global, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let key = Key::load(&args.key_file)?;
    let listen = args
        .listen
        .parse()
        .with_context(|| format!("{:?} is not ADDR:PORT (e.g. 0.0.0.0:7070)", args.listen))?;
    let mut health_checks = BTreeMap::new();
    for spec in &args.health_check {
        let (name, command) = spec.split_once('=').with_context(|| {
            format!("--health-check {spec:?} is not NAME=COMMAND (e.g. ready='curl -sf localhost:8080/health')")
        })?;
        health_checks.insert(name.to_owned(), command.to_owned());
    }
    let criu = super::criu(global)?;
    let opts = AgentOptions {
        key,
        work_dir: args.work_dir.clone(),
        state_root: global.root.clone(),
        health_checks,
        limits: Limits {
            sessions: args.max_sessions as usize,
            ..Limits::default()
        },
    };
    let agent = Arc::new(Agent::new(opts, Arc::new(CriuCheckpointer::new(criu)))?);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    runtime()?.block_on(async move {
        let announce = tokio::spawn(async move {
            if let Ok(addr) = ready_rx.await {
                eprintln!("agent listening on {addr}");
            }
        });
        let served = agent.serve(listen, Some(ready_tx)).await;
        announce.abort();
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn migrate(global: &Global, args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let workload = match (&args.id, args.pid) {
        (Some(id), _) => Workload::Container {
            id: id.clone(),
            state_root: global.root.clone(),
            target_id: args.target_id.clone(),
            shared_rootfs: args.shared_rootfs,
        },
        (None, Some(pid)) => Workload::Process { pid },
        (None, None) => bail!("give a container ID or --pid PID (the root of the tree to move)"),
    };
    let what = match &workload {
        Workload::Container { id, .. } => format!("container {id}"),
        Workload::Process { pid } => format!("process {pid}"),
    };
    let key = Key::load(&args.key_file)?;
    let criu = super::criu(global)?;
    let events_out: Option<Box<dyn Write + Send>> = match args.events.as_deref() {
        None => None,
        Some(p) if p == Path::new("-") => Some(Box::new(std::io::stdout())),
        Some(p) => Some(Box::new(std::fs::File::create(p).with_context(|| {
            format!("cannot create the events file {}", p.display())
        })?)),
    };
    let observer = Arc::new(Progress::new(events_out, !args.json));
    let request = MigrateRequest {
        to: args.to.clone(),
        key,
        workload,
        strategy: match args.strategy {
            StrategyArg::Auto => Strategy::Auto,
            StrategyArg::StopCopy => Strategy::StopCopy,
            StrategyArg::PostCopy => Strategy::PostCopy,
            StrategyArg::PreCopy => Strategy::PreCopy,
        },
        pre_copy: PreCopyLimits {
            max_rounds: args.max_rounds,
            downtime_budget: args.downtime_budget.map(Duration::from_millis),
        },
        tcp_established: args.tcp_established,
        work_dir: args.work_dir.clone(),
        health: match (&args.health_check, args.health_tcp) {
            (Some(name), _) => Health::Named(name.clone()),
            (None, Some(port)) => Health::Tcp(port),
            (None, None) => Health::None,
        },
        events: Events::new(Some(observer.clone() as Arc<dyn Observer>)),
        interrupt: Interrupt::never(),
    };
    let port = Arc::new(CriuCheckpointer::new(criu));
    let result = runtime()?.block_on(async move {
        // From here on SIGINT, SIGTERM and SIGHUP go to the migration: a
        // rollback before the commit, the cut-over's end after it.
        let mut request = request;
        request.interrupt = Interrupt::on_signals().context("cannot catch signals")?;
        anyhow::Ok(source::migrate(port, request).await)
    })?;
    observer.clear();
    if let Err(e) = &result {
        if args.json {
            // The failure as JSON too: what a script needs to act on.
            println!("{}", failure_json(e));
        }
        if let Some(doubt) = e.in_doubt() {
            eprintln!(
                "crabmigrate: error: cannot migrate {what} to {}: {doubt}",
                args.to
            );
            return Ok(ExitCode::from(IN_DOUBT));
        }
    }
    let report = result.with_context(|| format!("cannot migrate {what} to {}", args.to))?;
    let events_on_stdout = args.events.as_deref() == Some(Path::new("-"));
    if args.json && events_on_stdout {
        // Standard output holds JSON lines: the report is the last one.
        println!("{}", serde_json::to_string(&report)?);
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mut line = format!(
            "migrated {what} to {} (pid {} there) with {} ({}): downtime {:.1} ms, total {:.1} ms, {} on the wire",
            args.to,
            report.destination_pid,
            report.strategy.name(),
            report.why,
            report.downtime_ms,
            report.total_ms,
            human_bytes(report.bytes_on_wire),
        );
        if !report.rounds.is_empty() {
            let sent: Vec<String> = report
                .rounds
                .iter()
                .map(|r| human_bytes(r.bytes_sent))
                .collect();
            line.push_str(&format!(
                "; {} rounds sending {} (stopped: {})",
                report.rounds.len(),
                sent.join(", "),
                report.converged.map(|c| c.to_string()).unwrap_or_default()
            ));
        }
        if let Some(ms) = report.dependent_ms {
            line.push_str(&format!(
                "; the last page arrived {ms:.1} ms after the destination started"
            ));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A failed migration as one JSON object: the error, whether the workload
/// runs on the source (every failure but in doubt), a recognised CRIU
/// failure of either host, and, in doubt, the session and the commands.
fn failure_json(e: &source::MigrateError) -> serde_json::Value {
    let doubt = e.in_doubt().map(|d| {
        serde_json::json!({
            "session": d.session,
            "check": d.check,
            "resume": d.resume,
            "discard": d.discard,
        })
    });
    serde_json::json!({
        "error": source::chain(e),
        "runs_on_source": doubt.is_none(),
        "in_doubt": doubt,
        "known_failure": e.known_failure(),
    })
}

/// `crabmigrate recover`: lists in-doubt migrations, or ends one.
pub fn recover(args: &RecoverArgs) -> anyhow::Result<ExitCode> {
    let work = &args.work_dir;
    match (&args.resume, &args.discard) {
        (Some(session), _) => {
            let record = Record::load(work, session)?;
            record
                .resume(work)
                .with_context(|| format!("cannot resume migration {session}"))?;
            println!("resumed {} here", record.describe());
        }
        (None, Some(session)) => {
            let record = Record::load(work, session)?;
            record
                .discard(work)
                .with_context(|| format!("cannot discard migration {session}"))?;
            println!("discarded {} here", record.describe());
        }
        (None, None) => {
            for dir in source::sweep_work_dir(work) {
                eprintln!("removed {} (left by a killed migration)", dir.display());
            }
            let records = Record::list(work)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else if records.is_empty() {
                println!("no migration in doubt in {}", work.display());
            } else {
                for r in &records {
                    let (resume, discard) =
                        crabmigrate_migrate::recover::commands(work, &r.session);
                    println!("{}\n  resume: {resume}\n  discard: {discard}", r.describe());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_bytes(n: u64) -> String {
    if n >= 10 << 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 10 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Shows a migration's events: progress bars on a terminal (plain lines on
/// standard error otherwise), and JSON lines to `--events`.
struct Progress {
    json: Mutex<Option<Box<dyn Write + Send>>>,
    bar: Mutex<Option<indicatif::ProgressBar>>,
    terminal: bool,
    show: bool,
}

impl Progress {
    fn new(json: Option<Box<dyn Write + Send>>, show: bool) -> Self {
        Self {
            json: Mutex::new(json),
            bar: Mutex::new(None),
            terminal: std::io::stderr().is_terminal(),
            show,
        }
    }

    /// Removes a bar still on screen.
    fn clear(&self) {
        if let Ok(mut bar) = self.bar.lock() {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        }
    }

    fn line(&self, text: &str) {
        if !self.show {
            return;
        }
        match self.bar.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn start_bar(&self, phase: &str, total: Option<u64>) {
        if !(self.show && self.terminal) {
            return;
        }
        let bar = match total {
            Some(t) if t > 0 => indicatif::ProgressBar::new(t),
            _ => indicatif::ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
        } else {
            "{prefix:>12} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.replace(bar) {
                old.finish_and_clear();
            }
        }
    }
}

impl Observer for Progress {
    fn event(&self, since_start: Duration, event: &Event) {
        if let Ok(mut json) = self.json.lock() {
            if let Some(out) = json.as_mut() {
                let mut value = serde_json::to_value(event).unwrap_or_default();
                if let Some(map) = value.as_object_mut() {
                    map.insert(
                        "t_ms".into(),
                        serde_json::json!((since_start.as_secs_f64() * 1e6).round() / 1e3),
                    );
                }
                let _ = writeln!(out, "{value}");
                let _ = out.flush();
            }
        }
        match event {
            Event::Strategy { strategy, why } => self.line(&format!("strategy: {strategy} ({why})")),
            Event::PhaseStarted { phase, total } => {
                if self.terminal {
                    self.start_bar(phase, *total);
                } else {
                    self.line(&format!("{phase}: started"));
                }
            }
            Event::Progress { bytes, total, .. } => {
                if let Ok(bar) = self.bar.lock() {
                    if let Some(bar) = bar.as_ref() {
                        if let Some(t) = total {
                            if *bytes > *t {
                                bar.set_length(*bytes);
                            }
                        }
                        bar.set_position(*bytes);
                    }
                }
            }
            Event::PhaseFinished { phase, ms, bytes } => {
                self.clear();
                self.line(&format!(
                    "{phase}: done in {ms:.0} ms, {} sent",
                    human_bytes(*bytes)
                ));
            }
            Event::Round {
                round,
                bytes_total,
                bytes_sent,
                ..
            } => self.line(&format!(
                "round {round}: {} new of {}",
                human_bytes(*bytes_sent),
                human_bytes(*bytes_total)
            )),
            Event::Converged { why, .. } => self.line(&format!("pre-copy stops: {why}")),
            Event::Frozen => self.line("frozen on the source"),
            Event::Committing => self.line("restored on the destination; committing"),
            Event::CutOver {
                destination_pid,
                downtime_ms,
            } => self.line(&format!(
                "cut over: runs on the destination as pid {destination_pid} after {downtime_ms:.1} ms of downtime"
            )),
            Event::LastPage { dependent_ms } => self.line(&format!(
                "last page arrived {dependent_ms:.1} ms after the cut-over"
            )),
            Event::Rollback { cause } => {
                self.clear();
                self.line(&format!("rolled back: {cause}"));
            }
            Event::InDoubt {
                resume, discard, ..
            } => {
                self.clear();
                self.line(&format!(
                    "in doubt: the workload is kept stopped here; resume: {resume}; discard: {discard}"
                ));
            }
        }
    }
}
