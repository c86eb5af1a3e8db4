//! Benchmark 5: content-hashed re-transfer.
//!
//! Pre-copy without soft-dirty tracking sends each round's images as 4 KiB
//! chunks named by their sha256 (`crabmigrate_migrate::chunks`): the
//! destination keeps every chunk it received, so a later round carries only
//! chunks it lacks, plus (in the final round) every file's chunk list. The
//! issue's measurement: after a full transfer, dirty f = 0, 1, 10, 50 % of
//! the pages and transfer again; the second round should send at most
//! f + 1 % of the full size.
//!
//! The main cases drive the library directly, in process: a page image
//! `pages-1.img` of random bytes and a small `core-1.img` on the scratch
//! tmpfs, a first round (not the last), f % of the pages chosen at random
//! each get one byte changed (and the core is rewritten), then the final
//! round assembles the images on the receiving side, which must equal the
//! source byte for byte. Sender and receiver run as two tasks of one
//! multi-threaded runtime, joined by an in-memory stream
//! (`tokio::io::duplex`) through the encrypted channel, so they work in
//! parallel as two hosts would, but without a network. Per pair the
//! second round (hash + send + assemble) is timed against a plain full
//! copy of the same directory (`transfer::send_dir`/`recv_dir`, which
//! hashes the files too), interleaved A B, B A.
//!
//! An extra case migrates a workload whose memory does not change with
//! `crabmigrate migrate --strategy pre-copy` between the two netns hosts
//! and reads the report's `rounds: [{round, bytes_sent, bytes_total}]`.

use std::io::{Read, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crabmigrate_migrate::channel::SecureChannel;
use crabmigrate_migrate::chunks::{self, ChunkSender, ChunkStore, HashedFile, RoundSent};
use crabmigrate_migrate::key::Key;
use crabmigrate_migrate::meter::Meter;
use crabmigrate_migrate::protocol::{MessageReceiver, MessageSender};
use crabmigrate_migrate::transfer;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::runtime::Runtime;

use crate::migration::{field, not_built, Lab, Migration};
use crate::report::{Benchmark, Case, Comparison, Status};
use crate::stats::a_first;
use crate::workload::ms;
use crate::Ctx;

pub const NAME: &str = "content-hash-retransfer";
pub const TITLE: &str =
    "pre-copy with content-hashed 4 KiB chunks: bytes re-sent after a full round with f % of the pages dirtied";
const GOAL: &str =
    "bytes sent in the second round (chunk data + chunk lists) ≤ f + 1 % of the full size";

/// The page size of the image (and the chunk size).
const PAGE: usize = 4096;
/// Percentages of pages dirtied between the rounds.
const FRACTIONS: [f64; 4] = [0.0, 1.0, 10.0, 50.0];
/// The same with `--quick`.
const QUICK_FRACTIONS: [f64; 2] = [0.0, 10.0];
/// Size of `core-1.img`.
const CORE: usize = 1024;
/// The in-memory stream's buffer.
const DUPLEX: usize = 1 << 20;
/// Bound on one round or copy (a hang must not stall the whole run).
const LIMIT: Duration = Duration::from_secs(600);
const MIB: f64 = 1_048_576.0;
/// Table of the library cases' bytes.
const BYTES_TABLE: &str = "Bytes of the second round (crabmigrate_migrate::chunks in process, \
     pages-1.img of random bytes + a 1 KiB core-1.img)";
/// Table of the end-to-end case.
const E2E_TABLE: &str =
    "End to end: crabmigrate migrate --strategy pre-copy between the two netns hosts";

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Benchmark {
    let mut cases = library(ctx);
    let mut e2e = match end_to_end(ctx) {
        Ok(case) => case,
        Err(e) => Case::new(e2e_label(e2e_size(ctx))).failed(format!("{e:#}")),
    };
    e2e.table = Some(E2E_TABLE.to_owned());
    let pending = e2e.status == Status::Unavailable;
    cases.push(e2e);
    let mut bench = Benchmark::new(NAME, TITLE, Some(GOAL), cases);
    // The end-to-end case waits for the CLI's pre-copy.
    bench.pending = pending;
    bench
}

/// The library cases: per fraction, one of bytes and one of times.
fn library(ctx: &Ctx) -> Vec<Case> {
    let size = ctx.retransfer_mib;
    let fractions: &[f64] = if ctx.quick {
        &QUICK_FRACTIONS
    } else {
        &FRACTIONS
    };
    let setup = || -> anyhow::Result<(Runtime, std::path::PathBuf)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start a tokio runtime")?;
        Ok((rt, ctx.dir("retransfer")?))
    };
    let (rt, dir) = match setup() {
        Ok(s) => s,
        Err(e) => return vec![Case::new(format!("{size} MiB")).failed(format!("{e:#}"))],
    };
    ctx.prewarm(size * 4);
    let mut cases = Vec::new();
    for &f in fractions {
        match measure_fraction(ctx, &rt, &dir, size, f) {
            Ok(mut c) => cases.append(&mut c),
            Err(e) => {
                let mut case = Case::new(bytes_label(size, f))
                    .size(size)
                    .failed(format!("{e:#}"));
                case.table = Some(BYTES_TABLE.to_owned());
                cases.push(case);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    cases
}

fn bytes_label(size: u64, f: f64) -> String {
    format!("{size} MiB, f = {f} % dirtied")
}

/// The goal for `f` % dirtied, in percent of the full size.
fn goal_percent(f: f64) -> f64 {
    f + 1.0
}

fn measure_fraction(
    ctx: &Ctx,
    rt: &Runtime,
    dir: &Path,
    size: u64,
    f: f64,
) -> anyhow::Result<Vec<Case>> {
    let goal = goal_percent(f);
    let mut samples: [Vec<f64>; 7] = Default::default();
    let [full, data, index, percent, wire, first_ms, second_ms] = &mut samples;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut runs = Vec::new();
    let mut missed = Vec::new();
    for i in 0..ctx.warmup + ctx.pairs {
        let counted = i >= ctx.warmup;
        let pair_dir = dir.join(format!("pair-{i}"));
        let _ = std::fs::remove_dir_all(&pair_dir);
        std::fs::create_dir_all(&pair_dir)?;
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (((f * 1000.0) as u64) << 20) ^ i as u64;
        let result = one_pair(rt, &pair_dir, size << 20, f, seed, a_first(i));
        let _ = std::fs::remove_dir_all(&pair_dir);
        let p = result?;
        let sent_percent = 100.0 * (p.second.data + p.second.index) as f64 / p.first.total as f64;
        let met = sent_percent <= goal;
        ctx.log(&format!(
            "{NAME} {size} MiB f = {f} % pair {i}{}: round 2 sent {} B data + {} B chunk lists = {sent_percent:.3} % of {} B (goal ≤ {goal} %: {}), {} B on the wire, {:.0} ms; full copy {:.0} ms",
            if counted { "" } else { " (warm-up)" },
            p.second.data,
            p.second.index,
            p.first.total,
            if met { "met" } else { "MISSED" },
            p.second_wire,
            p.second_ms,
            p.copy_ms,
        ));
        if !counted {
            continue;
        }
        if !met {
            missed.push(sent_percent);
        }
        full.push(p.first.total as f64 / MIB);
        data.push(p.second.data as f64 / MIB);
        index.push(p.second.index as f64 / MIB);
        percent.push(sent_percent);
        wire.push(p.second_wire as f64 / MIB);
        first_ms.push(p.first_ms);
        second_ms.push(p.second_ms);
        a.push(p.second_ms);
        b.push(p.copy_ms);
        runs.push(json!({
            "pair": i,
            "order": if a_first(i) { "round 2 first" } else { "full copy first" },
            "pages": p.pages,
            "dirtied_pages": p.dirtied,
            "full_bytes": p.first.total,
            "round1": round_json(&p.first, p.first_wire, p.first_ms),
            "round2": round_json(&p.second, p.second_wire, p.second_ms),
            "round2_sent_percent": sent_percent,
            "goal_percent": goal,
            "goal_met": met,
            "full_copy": {"bytes": p.copy_bytes, "wire_bytes": p.copy_wire, "ms": p.copy_ms},
            "verified": true,
        }));
    }
    let n = runs.len();
    let mut bytes = Case::new(bytes_label(size, f)).size(size);
    bytes.table = Some(BYTES_TABLE.to_owned());
    bytes.metric("full MiB", full);
    bytes.metric("round 2 data MiB", data);
    bytes.metric("round 2 chunk lists MiB", index);
    bytes.metric("round 2 sent % of full", percent);
    bytes.metric("round 2 wire MiB", wire);
    bytes.metric("round 1 ms", first_ms);
    bytes.metric("round 2 ms", second_ms);
    bytes.reason = Some(if missed.is_empty() {
        format!("goal ≤ {goal} %: met in {n} of {n} runs; images verified")
    } else {
        format!(
            "goal ≤ {goal} %: MISSED in {} of {n} runs (worst {:.3} %); images verified",
            missed.len(),
            missed.iter().copied().fold(0.0, f64::max)
        )
    });
    bytes.runs = runs;
    let mut times = Case::new(format!("{size} MiB, f = {f} %: round 2 vs a full copy")).size(size);
    times.comparison = Some(Comparison::new(
        "round 2 (hash + send + assemble)",
        "full copy (send_dir + recv_dir)",
        "ms",
        a,
        b,
    ));
    Ok(vec![bytes, times])
}

fn round_json(r: &RoundSent, wire: u64, ms: f64) -> serde_json::Value {
    json!({
        "total": r.total,
        "data": r.data,
        "chunks": r.chunks,
        "index": r.index,
        "wire_bytes": wire,
        "ms": ms,
    })
}

/// What one pair measured.
#[derive(Debug)]
struct Pair {
    pages: u64,
    dirtied: u64,
    first: RoundSent,
    first_wire: u64,
    first_ms: f64,
    second: RoundSent,
    second_wire: u64,
    second_ms: f64,
    copy_bytes: u64,
    copy_wire: u64,
    copy_ms: f64,
}

/// One pair in `dir`: images of `bytes` bytes, a full first round, `f` %
/// of the pages dirtied, then the final round (A) and a full copy (B) in
/// the order `round_first` says. Fails if an assembled or copied file
/// differs from the source.
fn one_pair(
    rt: &Runtime,
    dir: &Path,
    bytes: u64,
    f: f64,
    seed: u64,
    round_first: bool,
) -> anyhow::Result<Pair> {
    let src = dir.join("source");
    std::fs::create_dir_all(&src)?;
    let mut rng = Rng::new(seed);
    let pages_path = src.join("pages-1.img");
    write_random(&pages_path, bytes, &mut rng)?;
    let core_path = src.join("core-1.img");
    std::fs::write(&core_path, rng.bytes(CORE))?;

    let key = Key::from_hex(&"07".repeat(32)).context("the test key")?;
    let ((mut tx, rx), written) = rt.block_on(channel(&key))?;
    let mut sender = ChunkSender::new();
    let store = ChunkStore::create(&dir.join("pack"), bytes.saturating_mul(4) + (1 << 20))?;

    // Round 1: everything (not timed against anything, kept for the
    // record).
    let started = Instant::now();
    let files = chunks::hash_dir(&src)?;
    let (first, rx, store) =
        rt.block_on(round(&mut sender, &mut tx, &src, &files, rx, store, None))?;
    let first_ms = ms(started.elapsed());
    let first_wire = written.swap(0, Ordering::Relaxed);

    // Dirty f % of the pages, one byte each, and rewrite the core.
    let pages = bytes.div_ceil(PAGE as u64);
    let dirtied = dirty(&pages_path, pages, f, &mut rng)?;
    std::fs::write(&core_path, rng.bytes(CORE))?;

    let images = dir.join("images");
    let copy = dir.join("copy");
    let mut receiving = Some((rx, store));
    let mut second = None;
    let mut copied = None;
    for a in [round_first, !round_first] {
        if a {
            let (rx, store) = receiving.take().context("round 2 ran twice")?;
            written.store(0, Ordering::Relaxed);
            let started = Instant::now();
            let files = chunks::hash_dir(&src)?;
            let (sent, _, _) = rt.block_on(round(
                &mut sender,
                &mut tx,
                &src,
                &files,
                rx,
                store,
                Some(&images),
            ))?;
            let took = ms(started.elapsed());
            second = Some((sent, written.load(Ordering::Relaxed), took));
        } else {
            copied = Some(full_copy(rt, &key, &src, &copy)?);
        }
    }
    let (second, second_wire, second_ms) = second.context("round 2 did not run")?;
    let (copy_bytes, copy_wire, copy_ms) = copied.context("the full copy did not run")?;
    for name in ["pages-1.img", "core-1.img"] {
        anyhow::ensure!(
            same_content(&src.join(name), &images.join(name))?,
            "the assembled {name} differs from the source"
        );
        anyhow::ensure!(
            same_content(&src.join(name), &copy.join(name))?,
            "the fully copied {name} differs from the source"
        );
    }
    Ok(Pair {
        pages,
        dirtied,
        first,
        first_wire,
        first_ms,
        second,
        second_wire,
        second_ms,
        copy_bytes,
        copy_wire,
        copy_ms,
    })
}

/// The source's end of the channel: its writes are counted.
type Tx = MessageSender;
/// The destination's end.
type Rx = MessageReceiver;

/// A channel over an in-memory stream (handshake done); the counter holds
/// the bytes the source wrote after the handshake.
async fn channel(key: &Key) -> anyhow::Result<((Tx, Rx), Arc<AtomicU64>)> {
    let (a, b) = tokio::io::duplex(DUPLEX);
    let written = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        inner: a,
        written: Arc::clone(&written),
    };
    let (source, dest) = tokio::join!(
        SecureChannel::connect(Box::new(counted), key, 0),
        SecureChannel::accept(Box::new(b), key, 0)
    );
    // The halves not kept are dropped: when one side drops its kept half,
    // the other side's reads or writes fail instead of waiting.
    let (tx, _) = source.context("the channel handshake (source)")?.split();
    let (_, rx) = dest.context("the channel handshake (destination)")?.split();
    written.store(0, Ordering::Relaxed);
    Ok((
        (MessageSender::new(tx), MessageReceiver::new(rx, LIMIT)),
        written,
    ))
}

/// One round of [`ChunkSender::send`] against [`chunks::recv_round`] in
/// another task (so the two ends work in parallel); with `last`, the
/// images are assembled there. Returns what was sent and the receiving end.
async fn round(
    sender: &mut ChunkSender,
    tx: &mut Tx,
    src: &Path,
    files: &[HashedFile],
    mut rx: Rx,
    mut store: ChunkStore,
    last: Option<&Path>,
) -> anyhow::Result<(RoundSent, Rx, ChunkStore)> {
    let out = last.map(Path::to_path_buf);
    // On an error the task ends and drops `rx`, so the sender stops too.
    let mut receiver = tokio::spawn(async move {
        let got = chunks::recv_round(&mut rx, &mut store, out.as_deref(), 100_000).await;
        got.map(|_| (rx, store))
    });
    let meter = Meter::default();
    let sent = tokio::time::timeout(LIMIT, sender.send(tx, src, files, last.is_some(), &meter))
        .await
        .map_err(|_| anyhow::anyhow!("sending the round took more than {LIMIT:?}"));
    let sent = match sent {
        Ok(Ok(sent)) => sent,
        Ok(Err(e)) => {
            // The receiver's failure, if that is why.
            let why = match tokio::time::timeout(Duration::from_secs(5), &mut receiver).await {
                Ok(Ok(Err(r))) => format!(" (the receiver: {r})"),
                _ => String::new(),
            };
            receiver.abort();
            anyhow::bail!("sending the round failed: {e}{why}");
        }
        Err(e) => {
            receiver.abort();
            return Err(e);
        }
    };
    let received = tokio::time::timeout(LIMIT, &mut receiver).await;
    let Ok(received) = received else {
        receiver.abort();
        anyhow::bail!("receiving the round took more than {LIMIT:?}");
    };
    let (rx, store) = received
        .context("the receiving task failed")?
        .context("receiving the round failed")?;
    Ok((sent, rx, store))
}

/// A plain full copy of `src` into `dst` with `transfer::send_dir` and
/// `recv_dir` over a new channel; returns (content bytes, bytes the source
/// wrote, ms until the receiver checked every file).
fn full_copy(rt: &Runtime, key: &Key, src: &Path, dst: &Path) -> anyhow::Result<(u64, u64, f64)> {
    rt.block_on(async {
        let ((mut tx, mut rx), written) = channel(key).await?;
        let out = dst.to_path_buf();
        let started = Instant::now();
        let mut receiver =
            tokio::spawn(
                async move { transfer::recv_dir(&mut rx, &out, 100_000).await.map(|_| ()) },
            );
        let sent = tokio::time::timeout(
            LIMIT,
            transfer::send_dir(&mut tx, src, |_: &str| false, &Meter::default()),
        )
        .await;
        let sent = match sent {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                let why = match tokio::time::timeout(Duration::from_secs(5), &mut receiver).await {
                    Ok(Ok(Err(r))) => format!(" (the receiver: {r})"),
                    _ => String::new(),
                };
                receiver.abort();
                anyhow::bail!("the full copy failed: {e}{why}");
            }
            Err(_) => {
                receiver.abort();
                anyhow::bail!("the full copy took more than {LIMIT:?}");
            }
        };
        let Ok(received) = tokio::time::timeout(LIMIT, &mut receiver).await else {
            receiver.abort();
            anyhow::bail!("receiving the full copy took more than {LIMIT:?}");
        };
        received
            .context("the receiving task failed")?
            .context("receiving the full copy failed")?;
        Ok((sent, written.load(Ordering::Relaxed), ms(started.elapsed())))
    })
}

/// An in-memory stream that counts the bytes written into it.
#[derive(Debug)]
struct Counted {
    inner: DuplexStream,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Changes one byte in each of `f` % of the `pages` pages of `path`,
/// chosen at random without repeats; returns how many.
fn dirty(path: &Path, pages: u64, f: f64, rng: &mut Rng) -> std::io::Result<u64> {
    let k = ((pages as f64) * f / 100.0)
        .round()
        .clamp(0.0, pages as f64) as u64;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let size = file.metadata()?.len();
    // A partial Fisher-Yates shuffle: the first k of `order` are the pages.
    let mut order: Vec<u64> = (0..pages).collect();
    for i in 0..k {
        let j = i + rng.next() % (pages - i);
        order.swap(i as usize, j as usize);
        let page = order[i as usize];
        let start = page * PAGE as u64;
        let at = start + rng.next() % (size - start).min(PAGE as u64);
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at)?;
        byte[0] ^= (rng.next() as u8) | 1;
        file.write_all_at(&byte, at)?;
    }
    Ok(k)
}

/// A file of `n` pseudo-random bytes.
fn write_random(path: &Path, n: u64, rng: &mut Rng) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let take = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        rng.fill(&mut block[..take]);
        file.write_all(&block[..take])?;
        left -= take as u64;
    }
    file.flush()
}

/// Whether two files hold the same bytes.
fn same_content(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let open =
        |p: &Path| std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// xorshift64: fast, seeded, good enough for test data.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// The end-to-end case's workload size.
fn e2e_size(ctx: &Ctx) -> u64 {
    if ctx.quick {
        16
    } else {
        64
    }
}

fn e2e_label(size: u64) -> String {
    format!("pre-copy {size} MiB, memory unchanged")
}

/// The end-to-end case: `crabmigrate migrate --strategy pre-copy` of a
/// workload that only reads its memory; the report's rounds after the
/// first should carry almost nothing. While the CLI refuses pre-copy, the
/// refusal is recorded as "unavailable".
fn end_to_end(ctx: &Ctx) -> anyhow::Result<Case> {
    let size = e2e_size(ctx);
    let repeats = if ctx.quick { 1 } else { ctx.pairs.clamp(1, 3) };
    let lab = Lab::new(ctx, "cd")?;
    let mut case = Case::new(e2e_label(size)).size(size);
    case.strategy = Some("pre-copy".to_owned());
    let mut runs = Vec::new();
    for i in 0..repeats {
        match lab.migrate_once(ctx, size, "pre-copy", 100)? {
            Migration::Refused { error, source_runs } => {
                ctx.log(&format!("{NAME}: {error}"));
                return Ok(if source_runs && not_built(&error) {
                    case.unavailable(format!(
                        "crabmigrate migrate --strategy pre-copy refuses: {error}"
                    ))
                } else {
                    case.failed(format!("{error}; agent: {}", lab.agent_log()))
                });
            }
            Migration::Done { report, gap, .. } => {
                let Some(rounds) = report.get("rounds").and_then(|r| r.as_array()) else {
                    return Ok(case.unavailable(
                        "the pre-copy report has no `rounds` (bytes_sent, bytes_total per round) yet",
                    ));
                };
                let sent: Vec<f64> = rounds
                    .iter()
                    .filter_map(|r| r["bytes_sent"].as_f64())
                    .collect();
                let total: Vec<f64> = rounds
                    .iter()
                    .filter_map(|r| r["bytes_total"].as_f64())
                    .collect();
                // Chunk lists (`index_bytes`, final round) are counted
                // apart from `bytes_sent` in the report.
                let lists: Vec<f64> = rounds
                    .iter()
                    .map(|r| r["index_bytes"].as_f64().unwrap_or(0.0))
                    .collect();
                let later_sent: f64 = sent.iter().skip(1).sum();
                let later_lists: f64 = lists.iter().skip(1).sum();
                let later_total: f64 = total.iter().skip(1).sum();
                let record = json!({
                    "run": i,
                    "report": report,
                    "rounds": rounds.len(),
                    "later_rounds_sent_percent": (later_total > 0.0).then(|| 100.0 * later_sent / later_total),
                    "later_rounds_sent_with_lists_percent": (later_total > 0.0).then(|| 100.0 * (later_sent + later_lists) / later_total),
                    "first_round_sent_mib": sent.first().map(|b| b / MIB),
                    "external_gap_ms": gap.map(|g| g.gap_ms),
                });
                ctx.log(&format!("{NAME} run {i}: {record}"));
                runs.push(record);
            }
        }
    }
    let pick = |name: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[name].as_f64()).collect() };
    case.metric("rounds", &pick("rounds"));
    case.metric(
        "later rounds re-sent data %",
        &pick("later_rounds_sent_percent"),
    );
    case.metric(
        "later rounds re-sent data + chunk lists %",
        &pick("later_rounds_sent_with_lists_percent"),
    );
    case.metric("first round sent MiB", &pick("first_round_sent_mib"));
    case.metric("external gap ms", &pick("external_gap_ms"));
    let downtime: Vec<f64> = runs
        .iter()
        .filter_map(|r| field(&r["report"], "downtime_ms"))
        .collect();
    case.metric("downtime ms", &downtime);
    case.runs = runs;
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirtying_picks_distinct_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pages");
        let mut rng = Rng::new(5);
        write_random(&path, 100 * PAGE as u64 + 10, &mut rng).expect("write");
        let before = std::fs::read(&path).expect("read");
        assert_eq!(dirty(&path, 101, 10.0, &mut rng).expect("dirty"), 10);
        let after = std::fs::read(&path).expect("read");
        let changed = before
            .chunks(PAGE)
            .zip(after.chunks(PAGE))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 10);
        assert_eq!(dirty(&path, 101, 0.0, &mut rng).expect("dirty"), 0);
        assert_eq!(dirty(&path, 101, 100.0, &mut rng).expect("dirty"), 101);
    }

    #[test]
    fn a_pair_resends_only_dirtied_pages_and_verifies() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = 256 * PAGE as u64;
        for round_first in [true, false] {
            let pair_dir = dir.path().join(format!("{round_first}"));
            std::fs::create_dir_all(&pair_dir).expect("mkdir");
            let p = one_pair(&rt, &pair_dir, bytes, 10.0, 3, round_first).expect("pair");
            assert_eq!(p.pages, 256);
            assert_eq!(p.dirtied, 26);
            assert_eq!(p.first.total, bytes + CORE as u64);
            assert_eq!(p.first.data, bytes + CORE as u64);
            assert_eq!(p.second.data, 26 * PAGE as u64 + CORE as u64);
            assert_eq!(p.second.index, 32 * 257);
            assert!(p.second_wire > p.second.data + p.second.index);
            assert_eq!(p.copy_bytes, bytes + CORE as u64);
        }
    }
}
