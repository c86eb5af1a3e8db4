//! Benchmark 4: how fast a migration moves its images between the two
//! hosts, against a raw copy of the same number of bytes over a plain TCP
//! socket on the same link (tmpfs file → `sendfile` → veth → `splice` →
//! tmpfs file, done by this program in threads that entered the
//! namespaces).
//!
//! Two views of the migration (a stop-copy of a workload of
//! `--throughput-mib`): end to end (all bytes / `total_ms`, which includes
//! CRIU's dump and restore) and while frozen (page bytes /
//! `criu_frozen_ms`, the window in which CRIU streams the pages through
//! crabmigrate's encrypted channel). Optionally again on a link limited
//! with `tc tbf` (`--link-rate`).

use std::io::Write as _;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::migration::{field, Lab, Migration};
use crate::report::{Benchmark, Case, Comparison};
use crate::stats::a_first;
use crate::workload::ms;
use crate::Ctx;

pub const NAME: &str = "transfer-throughput";
pub const TITLE: &str =
    "stop-copy migration throughput vs a raw TCP copy of the same bytes between the two netns";
const GOAL: &str = "ratio ≥ 0.8 (≥ 0.95 world-class), while frozen";
/// Port of the raw copy's receiver.
const RAW_PORT: u16 = 7071;
const MIB: f64 = 1_048_576.0;

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Benchmark {
    let lab = match Lab::new(ctx, "tp") {
        Ok(lab) => lab,
        Err(e) => return Benchmark::failed(NAME, TITLE, Some(GOAL), format!("{e:#}")),
    };
    let mut links = vec![None];
    if !ctx.quick {
        if let Some(rate) = &ctx.link_rate {
            links.push(Some(rate.clone()));
        }
    }
    let mut cases = Vec::new();
    for link in links {
        let label = link
            .as_deref()
            .map_or("veth".to_owned(), |r| format!("veth, tbf {r}"));
        if let Some(rate) = &link {
            if let Err(e) = lab.hosts.shape(rate) {
                cases.push(Case::new(label).unavailable(format!("cannot shape the link: {e}")));
                continue;
            }
        }
        match measure(ctx, &lab, &label) {
            Ok(mut c) => cases.append(&mut c),
            Err(e) => cases.push(Case::new(label).failed(format!("{e:#}"))),
        }
        if link.is_some() {
            let _ = lab.hosts.unshape();
        }
    }
    Benchmark::new(NAME, TITLE, Some(GOAL), cases)
}

fn measure(ctx: &Ctx, lab: &Lab, label: &str) -> anyhow::Result<Vec<Case>> {
    let size = ctx.throughput_mib;
    ctx.prewarm(size * 3);
    let source = lab.dir.join("raw-source");
    let sink = lab.dir.join("raw-sink");
    let (mut e2e, mut frozen, mut raw_e2e, mut raw_frozen) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut runs = Vec::new();
    for i in 0..ctx.warmup + ctx.pairs {
        let counted = i >= ctx.warmup;
        let order = if a_first(i) {
            [true, false]
        } else {
            [false, true]
        };
        // The raw copy moves as many bytes as the migration of the same
        // pair when that ran first, else as the previous pair's (the same
        // workload size gives the same images within a few KiB).
        let mut bytes: Option<(u64, u64)> = None;
        let mut pair = json!({"pair": i});
        let mut raw_mibs = None;
        for ours in order {
            if ours {
                let m = lab.migrate_once(ctx, size, "stop-copy", 500)?;
                let Migration::Done { report, .. } = m else {
                    if let Migration::Refused { error, .. } = m {
                        anyhow::bail!("the migration failed: {error}; agent: {}", lab.agent_log());
                    }
                    anyhow::bail!("the migration failed");
                };
                let pages = field(&report, "page_bytes").context("no page_bytes")?;
                let images = field(&report, "image_bytes").unwrap_or(0.0);
                let total = field(&report, "total_ms").context("no total_ms")?;
                let frozen_ms = field(&report, "criu_frozen_ms").context("no criu_frozen_ms")?;
                bytes = Some((pages as u64 + images as u64, pages as u64));
                let a1 = (pages + images) / MIB / (total / 1000.0);
                let a2 = pages / MIB / (frozen_ms / 1000.0);
                pair["migration"] =
                    json!({"report": report, "end_to_end_mib_s": a1, "frozen_mib_s": a2});
                if counted {
                    e2e.push(a1);
                    frozen.push(a2);
                }
            } else {
                // Copy the byte count of this pair's migration if it ran
                // already, else the previous pair's (or the workload size).
                let n = bytes
                    .map(|b| b.0)
                    .or_else(|| pair_bytes(&runs))
                    .unwrap_or(size << 20);
                prepare_source(&source, n)?;
                let took = raw_copy(lab, &source, &sink)?;
                let mibs = n as f64 / MIB / took.as_secs_f64();
                pair["raw"] = json!({"bytes": n, "ms": ms(took), "mib_s": mibs});
                raw_mibs = Some(mibs);
            }
        }
        let raw = raw_mibs.context("no raw copy")?;
        ctx.log(&format!(
            "{NAME} {label} pair {i}{}: migration {} MiB/s end to end, {} MiB/s while frozen; raw {raw:.0} MiB/s",
            if counted { "" } else { " (warm-up)" },
            pair["migration"]["end_to_end_mib_s"].as_f64().map_or("-".into(), |v| format!("{v:.0}")),
            pair["migration"]["frozen_mib_s"].as_f64().map_or("-".into(), |v| format!("{v:.0}")),
        ));
        if counted {
            raw_e2e.push(raw);
            raw_frozen.push(raw);
            runs.push(pair);
        }
    }
    let _ = std::fs::remove_file(&source);
    let mut end_to_end = Case::new(format!("end to end, {label}")).size(size);
    end_to_end.comparison = Some(Comparison::new(
        "migration (images / total_ms)",
        "raw TCP copy",
        "MiB/s",
        e2e,
        raw_e2e,
    ));
    let mut while_frozen = Case::new(format!("while frozen, {label}")).size(size);
    while_frozen.comparison = Some(Comparison::new(
        "migration (pages / criu_frozen_ms)",
        "raw TCP copy",
        "MiB/s",
        frozen,
        raw_frozen,
    ));
    while_frozen.runs = runs;
    Ok(vec![end_to_end, while_frozen])
}

fn pair_bytes(runs: &[serde_json::Value]) -> Option<u64> {
    runs.last()?["raw"]["bytes"].as_u64()
}

/// A file of `n` pseudo-random bytes (no copy may compress or skip it).
fn prepare_source(path: &Path, n: u64) -> anyhow::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == n) {
        return Ok(());
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut left = n;
    let mut block = vec![0u8; 1 << 20];
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let take = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        file.write_all(&block[..take])?;
        left -= take as u64;
    }
    file.flush()?;
    Ok(())
}

/// Copies `source` from `src` to a new `sink` file in `dst` over TCP;
/// returns the time from connecting to the last byte written.
fn raw_copy(lab: &Lab, source: &Path, sink: &Path) -> anyhow::Result<Duration> {
    let _ = std::fs::remove_file(sink);
    let addr = format!("{}:{RAW_PORT}", lab.hosts.veth.b_addr);
    let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
    let listen = addr.clone();
    let sink_path = sink.to_path_buf();
    let receiver = lab
        .hosts
        .dst
        .spawn(move || -> std::io::Result<(u64, Instant)> {
            let listener = match TcpListener::bind(&listen) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(Ok(()));
            // Bounded: a sender that never connects must not hang us.
            listener.set_nonblocking(true)?;
            let until = Instant::now() + Duration::from_secs(30);
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < until =>
                    {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(e) => return Err(e),
                }
            };
            stream.set_nonblocking(false)?;
            let mut file = std::fs::File::create(&sink_path)?;
            // 1 MiB reads and writes (std::io::copy would use 8 KiB ones
            // here: it has no zero-copy path from a socket into a file).
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                let got = match std::io::Read::read(&mut stream, &mut buf) {
                    Ok(0) => break,
                    Ok(got) => got,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                file.write_all(&buf[..got])?;
                n += got as u64;
            }
            Ok((n, Instant::now()))
        })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the raw receiver did not start")?
        .context("the raw receiver cannot listen")?;
    let source_path = source.to_path_buf();
    let started = Instant::now();
    let sender = lab.hosts.src.spawn(move || -> std::io::Result<u64> {
        let mut stream = TcpStream::connect(&addr)?;
        let mut file = std::fs::File::open(&source_path)?;
        // std::io::copy uses sendfile from a file into a socket.
        let n = std::io::copy(&mut file, &mut stream)?;
        stream.shutdown(Shutdown::Write)?;
        Ok(n)
    })?;
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the raw sender panicked"))???;
    let (received, done) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the raw receiver panicked"))???;
    let _ = std::fs::remove_file(sink);
    anyhow::ensure!(
        sent == received,
        "the raw copy sent {sent} bytes but {received} arrived"
    );
    Ok(done - started)
}
