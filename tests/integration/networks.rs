//! Containers with a CNI network, in the namespace topology of
//! `topology.rs` (crabmigrate runs inside host A):
//!
//! - `run --network`: the container answers the client over the switch;
//!   `state` shows the result; `network check` passes, and fails naming
//!   the plugin once the address is gone; `delete` releases the lease and
//!   the namespace; `--ip`/`--mac` are honoured;
//! - `delete --force` after the init was killed, and after a create that
//!   died before writing its state;
//! - checkpoint + restore of a busybox TCP echo server while the client
//!   sends a request every 5 ms over one connection: zero resets, every
//!   reply correct and in order; the largest gap between replies is
//!   printed (never asserted);
//! - a UDP echo service keeps answering from the same process, also after
//!   a restore from an exported archive (which carries network.status);
//! - bad input, refused with nothing changed: an unknown network, a
//!   missing plugin, an address taken (by a container, by another CNI
//!   user's lease).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::{container_id, wait_until, BusyboxBundle};

use crate::topology::{address_of, network_of, Host, Topology};

/// A bound on waiting, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);
const PORT: u16 = 7070;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// `crabmigrate ARGS` in `host`, which must succeed; its stdout.
fn ok(host: &Host, args: &[&str]) -> String {
    let out = host.run(args);
    assert!(
        out.status.success(),
        "crabmigrate {} failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `crabmigrate ARGS` in `host`, which must fail; its stderr.
fn refused(host: &Host, args: &[&str]) -> String {
    let out = host.run(args);
    assert!(
        !out.status.success(),
        "crabmigrate {} succeeded: {}",
        args.join(" "),
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// Runs `cmd` with its output in files under `dir` (a restored or started
/// container must not hold a pipe of ours): (status, stdout, stderr).
fn run_to_files(mut cmd: Command, dir: &Path) -> (ExitStatus, String, String) {
    let out_path = dir.join("cmd.stdout");
    let err_path = dir.join("cmd.stderr");
    let status = cmd
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .expect("command runs");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    (status, read(&out_path), read(&err_path))
}

/// `run -d --network NET ...` in `host` with /dev/null as stdio, which the
/// container inherits (a host file there would make the checkpoint fail).
fn run_networked(host: &Host, bundle: &BusyboxBundle, id: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--network", &host.network];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--bundle", bundle.path().to_str().unwrap(), id]);
    let status = host
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("crabmigrate runs");
    if !status.success() {
        // Again without the container, to show why.
        let out = host.run(&[
            "create",
            "--network",
            &host.network,
            "--bundle",
            bundle.path().to_str().unwrap(),
            &format!("{id}-why"),
        ]);
        panic!(
            "crabmigrate {} failed ({status}); a create like it says: {}",
            args.join(" "),
            text(&out.stderr)
        );
    }
}

fn state(host: &Host, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok(host, &["state", id])).expect("state is JSON")
}

/// Files under /run/netns whose name holds `id`.
fn namespaces_of(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("crabmigrate-{id}-")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A busybox echo server on PORT: one `cat` per connection.
fn echo_bundle() -> BusyboxBundle {
    BusyboxBundle::new(&["nc", "-ll", "-p", &PORT.to_string(), "-e", "cat"])
}

/// Connects from the client namespace to `addr:PORT`, retrying until the
/// server listens.
fn connect(topo: &Topology, addr: &str) -> TcpStream {
    let target = format!("{addr}:{PORT}");
    topo.client
        .ns
        .run(|| wait_until(PATIENCE, || TcpStream::connect(target.as_str()).ok()))
        .expect("the container's echo server answers")
}

/// One request and its reply.
fn echo(stream: &TcpStream, line: &str) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    (&*stream)
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    assert_eq!(reply.trim_end(), line);
}

#[test]
fn networked_container_lifecycle_state_check_and_delete() {
    if testkit::real_criu("networked_container_lifecycle_state_check_and_delete").is_none() {
        return;
    }
    let topo = Topology::new("net-life");
    let a = &topo.a;
    let bundle = echo_bundle();
    let id = container_id("net-life");
    run_networked(a, &bundle, &id, &[]);

    let st = state(a, &id);
    let net = network_of(&st);
    assert_eq!(net["name"], a.network.as_str(), "{st}");
    assert_eq!(net["interface"], "eth0");
    let addr = address_of(&st);
    assert!(addr.starts_with(&format!("{}.", topo.subnet)), "{st}");
    let mac = net["mac"].as_str().expect("a MAC").to_owned();
    assert_eq!(net["result"]["cniVersion"], "1.0.0");
    assert_eq!(a.leased(), vec![addr.clone()]);
    let netns = PathBuf::from(net["netns"].as_str().unwrap());
    assert!(netns.exists());
    let pid = st["pid"].as_u64().unwrap();
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap(),
        std::fs::metadata(&netns)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap(),
        "the container lives in the attached namespace"
    );

    // The client reaches it over the switch; the client's neighbour entry
    // has the container's MAC.
    let stream = connect(&topo, &addr);
    echo(&stream, "hello");
    drop(stream);
    let neigh = topo
        .client
        .ns
        .command("ip")
        .args(["neigh", "show", &addr])
        .output()
        .unwrap();
    assert!(
        text(&neigh.stdout).contains(&mac),
        "{}",
        text(&neigh.stdout)
    );

    let checked = ok(a, &["network", "check", &id]);
    assert!(checked.contains("CHECK passed"), "{checked}");
    // Take the address away behind the runtime's back: CHECK says so.
    let dev_addr = net["addresses"][0].as_str().unwrap().to_owned();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "addr", "del", &dev_addr, "dev", "eth0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let why = refused(a, &["network", "check", &id]);
    assert!(why.contains("failed CNI CHECK"), "{why}");
    assert!(why.contains("CNI plugin bridge refused CHECK"), "{why}");

    let listed = ok(a, &["network", "ls"]);
    assert!(listed.contains(&a.network), "{listed}");

    ok(a, &["delete", "--force", &id]);
    assert!(a.leased().is_empty(), "the lease is released");
    assert!(!netns.exists(), "the namespace is gone");
    assert!(namespaces_of(&id).is_empty());

    // --ip and --mac are honoured.
    let wanted_ip = format!("{}.42", topo.subnet);
    let id2 = container_id("net-life-ip");
    run_networked(
        a,
        &bundle,
        &id2,
        &["--ip", &wanted_ip, "--mac", "02:42:ac:11:00:2a"],
    );
    let st = state(a, &id2);
    assert_eq!(address_of(&st), wanted_ip);
    assert_eq!(network_of(&st)["mac"], "02:42:ac:11:00:2a");
    let stream = connect(&topo, &wanted_ip);
    echo(&stream, "by request");
    ok(a, &["delete", "--force", &id2]);
    assert!(a.leased().is_empty());
}

#[test]
fn the_topology_puts_two_hosts_and_a_client_on_one_segment() {
    if testkit::real_criu("the_topology_puts_two_hosts_and_a_client_on_one_segment").is_none() {
        return;
    }
    let topo = Topology::new("net-topo");
    let ports = topo
        .switch
        .command("ip")
        .args(["-o", "link", "show", "master", "sw0"])
        .output()
        .unwrap();
    assert_eq!(
        text(&ports.stdout).lines().count(),
        3,
        "A, B and the client"
    );
    let bundle = echo_bundle();
    let on_a = container_id("net-topo-a");
    let on_b = container_id("net-topo-b");
    run_networked(&topo.a, &bundle, &on_a, &[]);
    // B hands out its own range, and accepts an address of A's range.
    let from_a_range = format!("{}.77", topo.subnet);
    run_networked(&topo.b, &bundle, &on_b, &["--ip", &from_a_range]);
    let addr_a = address_of(&state(&topo.a, &on_a));
    let last = |a: &str| a.rsplit('.').next().unwrap().parse::<u8>().unwrap();
    assert!((10..100).contains(&last(&addr_a)), "{addr_a}");
    assert_eq!(address_of(&state(&topo.b, &on_b)), from_a_range);
    assert_eq!(topo.b.leased(), vec![from_a_range.clone()]);
    assert_eq!(topo.a.leased(), vec![addr_a.clone()]);
    for addr in [&addr_a, &from_a_range] {
        let stream = connect(&topo, addr);
        assert_eq!(
            stream.local_addr().unwrap().ip().to_string(),
            topo.client.addr
        );
        echo(&stream, addr);
    }
    ok(&topo.a, &["delete", "--force", &on_a]);
    ok(&topo.b, &["delete", "--force", &on_b]);
    assert!(topo.a.leased().is_empty() && topo.b.leased().is_empty());
}

#[test]
fn delete_force_releases_the_network_after_a_crash() {
    if testkit::real_criu("delete_force_releases_the_network_after_a_crash").is_none() {
        return;
    }
    let topo = Topology::new("net-crash");
    let a = &topo.a;
    let bundle = echo_bundle();

    // The container's init dies: the container is stopped, its network
    // still attached until delete.
    let id = container_id("net-crash");
    run_networked(a, &bundle, &id, &[]);
    let st = state(a, &id);
    let netns = PathBuf::from(network_of(&st)["netns"].as_str().unwrap());
    let pid = i32::try_from(st["pid"].as_u64().unwrap()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(PATIENCE, || {
        (state(a, &id)["status"] == "stopped").then_some(())
    })
    .expect("the container is stopped");
    assert_eq!(a.leased().len(), 1);
    ok(a, &["delete", "--force", &id]);
    assert!(a.leased().is_empty());
    assert!(!netns.exists());

    // crabmigrate died between ADD and writing state.json: only the
    // attachment record is there. delete --force releases it.
    let id = container_id("net-crash-create");
    run_networked(a, &bundle, &id, &[]);
    let st = state(a, &id);
    let netns = PathBuf::from(network_of(&st)["netns"].as_str().unwrap());
    let pid = i32::try_from(st["pid"].as_u64().unwrap()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let dir = a.rt.root.path().join(&id);
    std::fs::remove_file(dir.join("state.json")).unwrap();
    let why = refused(a, &["delete", &id]);
    assert!(why.contains("does not exist"), "{why}");
    ok(a, &["delete", "--force", &id]);
    assert!(a.leased().is_empty());
    assert!(!netns.exists());
    assert!(!dir.exists());
    // The cgroup create made (recorded before state.json) is gone too.
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
        .map(|h| h.path().join("crabmigrate").join(&id))
        .filter(|p| p.exists())
        .collect();
    assert!(left.is_empty(), "cgroup left behind: {left:?}");
}

/// The client's side of the TCP test: one request every 5 ms, each reply
/// checked, the largest gap between two replies kept.
struct Client {
    replies: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Duration, String>>,
}

impl Client {
    fn start(stream: TcpStream) -> Self {
        let replies = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (replies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut largest = Duration::ZERO;
            let mut last = Instant::now();
            let mut n: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let request = format!("request {n}\n");
                writer
                    .write_all(request.as_bytes())
                    .map_err(|e| format!("send {n}: {e}"))?;
                let mut reply = String::new();
                match reader.read_line(&mut reply) {
                    Ok(0) => return Err(format!("the connection closed at request {n}")),
                    Ok(_) if reply == request => {}
                    Ok(_) => return Err(format!("reply {reply:?} to {request:?}")),
                    Err(e) => return Err(format!("reply {n}: {e}")),
                }
                let now = Instant::now();
                largest = largest.max(now - last);
                last = now;
                r.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(largest)
        });
        Self {
            replies,
            stop,
            thread,
        }
    }

    fn replies(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }

    /// Waits until `n` more replies came, or the client stopped.
    fn wait_more(&self, n: u64) {
        let target = self.replies() + n;
        wait_until(PATIENCE, || {
            (self.replies() >= target || self.thread.is_finished()).then_some(())
        })
        .unwrap_or_else(|| panic!("the client got no reply for {PATIENCE:?}"));
    }

    fn finish(self) -> (u64, Result<Duration, String>) {
        self.stop.store(true, Ordering::Relaxed);
        let result = self.thread.join().expect("client thread");
        (self.replies.load(Ordering::Relaxed), result)
    }
}

#[test]
fn checkpoint_and_restore_keep_a_tcp_client_connected() {
    if testkit::real_criu("checkpoint_and_restore_keep_a_tcp_client_connected").is_none() {
        return;
    }
    let topo = Topology::new("net-cr");
    let a = &topo.a;
    let bundle = echo_bundle();
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    let images = images.to_str().unwrap();
    let id = container_id("net-cr");
    run_networked(a, &bundle, &id, &[]);
    let before = state(a, &id);
    let addr = address_of(&before);
    let mac = network_of(&before)["mac"].clone();
    let old_netns = network_of(&before)["netns"].as_str().unwrap().to_owned();

    let client = Client::start(connect(&topo, &addr));
    client.wait_more(50);
    let started = Instant::now();
    ok(
        a,
        &[
            "checkpoint",
            &id,
            "--images-dir",
            images,
            "--tcp-established",
        ],
    );
    let checkpointed = started.elapsed();
    let st = state(a, &id);
    assert_eq!(st["status"], "checkpointed");
    assert_eq!(network_of(&st)["released"], true);
    assert!(a.leased().is_empty(), "the checkpoint released the address");
    assert!(!Path::new(&old_netns).exists());
    assert!(Path::new(images).join("network.status").is_file());

    let (status, _, stderr) = run_to_files(
        a.command(&[
            "restore",
            &id,
            "--bundle",
            bundle.path().to_str().unwrap(),
            "--images-dir",
            images,
            "--tcp-established",
            "-d",
        ]),
        work.path(),
    );
    assert!(status.success(), "restore failed: {stderr}");
    let restored_at = started.elapsed();
    let after = state(a, &id);
    assert_eq!(after["status"], "running");
    assert_eq!(address_of(&after), addr, "the same address");
    assert_eq!(network_of(&after)["mac"], mac, "the same MAC");
    let new_netns = network_of(&after)["netns"].as_str().unwrap().to_owned();
    assert_ne!(new_netns, old_netns, "a new namespace");
    assert_eq!(a.leased(), vec![addr.clone()]);
    // Unlocked: no lock chain is left in the new namespace.
    let rules = Command::new("nsenter")
        .arg(format!("--net={new_netns}"))
        .arg("iptables-save")
        .output()
        .unwrap();
    assert!(rules.status.success(), "{}", text(&rules.stderr));
    assert!(
        !text(&rules.stdout).contains("CRABMIGRATE-LOCK"),
        "{}",
        text(&rules.stdout)
    );

    client.wait_more(100);
    let (replies, result) = client.finish();
    let largest = result
        .unwrap_or_else(|e| panic!("the client's connection broke across checkpoint/restore: {e}"));
    println!(
        "MEASURE checkpoint_and_restore_keep_a_tcp_client_connected: {replies} replies, \
         all correct and in order; largest gap {:.1} ms (checkpoint took {:.1} ms, \
         restore done {:.1} ms after the checkpoint started)",
        largest.as_secs_f64() * 1e3,
        checkpointed.as_secs_f64() * 1e3,
        restored_at.as_secs_f64() * 1e3
    );
    ok(a, &["delete", "--force", &id]);
    assert!(a.leased().is_empty());
}

/// A bundle running the test workload's UDP echo: the host's /usr is bound
/// read-only for its libraries.
fn udp_bundle() -> BusyboxBundle {
    let echo = format!("0.0.0.0:{PORT}");
    let bundle = BusyboxBundle::new(&["/bin/workload", "--udp-echo", &echo]);
    let rootfs = bundle.rootfs();
    let copy = testkit::private_copy("crabmigrate-workload", bundle.path());
    std::fs::copy(copy, rootfs.join("bin/workload")).unwrap();
    std::fs::create_dir_all(rootfs.join("usr")).unwrap();
    for (link, target) in [("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        std::os::unix::fs::symlink(target, rootfs.join(link)).unwrap();
    }
    let mut config = BusyboxBundle::default_config(&["/bin/workload", "--udp-echo", &echo]);
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/usr", "type": "bind", "source": "/usr",
            "options": ["rbind", "ro"]
        }));
    bundle.write_config(&config);
    bundle
}

/// Sends `payload` until its echo comes back (UDP may lose some; echoes
/// of earlier tries are skipped); the reply.
fn udp_ask(socket: &UdpSocket, target: &str, payload: &str) -> String {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    wait_until(PATIENCE, || {
        socket.send_to(payload.as_bytes(), target).ok()?;
        loop {
            let (n, _) = socket.recv_from(&mut buf).ok()?;
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            if reply.ends_with(&format!(" {payload}")) {
                return Some(reply);
            }
        }
    })
    .unwrap_or_else(|| panic!("no UDP reply to {payload:?} from {target}"))
}

#[test]
fn a_udp_service_answers_from_the_same_process_after_restore() {
    if testkit::real_criu("a_udp_service_answers_from_the_same_process_after_restore").is_none() {
        return;
    }
    let topo = Topology::new("net-udp");
    let a = &topo.a;
    let bundle = udp_bundle();
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    let images = images.to_str().unwrap();
    let id = container_id("net-udp");
    run_networked(a, &bundle, &id, &[]);
    let addr = address_of(&state(a, &id));
    let target = format!("{addr}:{PORT}");
    let socket = topo.client.ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    // Replies are `SERVED PAYLOAD`, SERVED counting every datagram the
    // process answered: a restored process counts on, a restarted one
    // would start over at 1.
    let served = |reply: &str| -> u64 {
        reply
            .split_once(' ')
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("{reply:?} is not SERVED PAYLOAD"))
    };
    let first = served(&udp_ask(&socket, &target, "one"));

    ok(a, &["checkpoint", &id, "--images-dir", images]);
    let (status, _, stderr) = run_to_files(
        a.command(&[
            "restore",
            &id,
            "--bundle",
            bundle.path().to_str().unwrap(),
            "--images-dir",
            images,
            "-d",
        ]),
        work.path(),
    );
    assert!(status.success(), "restore failed: {stderr}");
    let second = served(&udp_ask(&socket, &target, "two"));
    assert!(
        second > first,
        "the same process answers: served {second} after {first}"
    );

    // Through an archive: network.status travels with it, and a restore
    // from the archive recreates the network.
    let again = work.path().join("again");
    let archive = work.path().join("udp.tar.zst");
    let extracted = work.path().join("extracted");
    ok(
        a,
        &["checkpoint", &id, "--images-dir", again.to_str().unwrap()],
    );
    ok(a, &["export", &id, "-o", archive.to_str().unwrap()]);
    let (status, _, stderr) = run_to_files(
        a.command(&[
            "restore",
            &id,
            "--bundle",
            bundle.path().to_str().unwrap(),
            "--import",
            archive.to_str().unwrap(),
            "--images-dir",
            extracted.to_str().unwrap(),
            "-d",
        ]),
        work.path(),
    );
    assert!(status.success(), "restore --import failed: {stderr}");
    assert!(extracted.join("network.status").is_file());
    let third = served(&udp_ask(&socket, &target, "three"));
    assert!(third > second, "served {third} after {second}");
    ok(a, &["delete", "--force", &id]);
}

#[test]
fn bad_networks_and_taken_addresses_are_refused_with_nothing_changed() {
    if testkit::real_criu("bad_networks_and_taken_addresses_are_refused_with_nothing_changed")
        .is_none()
    {
        return;
    }
    let topo = Topology::new("net-bad");
    let a = &topo.a;
    let bundle = echo_bundle();
    let bundle_dir = bundle.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let nothing_left = |id: &str| {
        assert!(!a.rt.root.path().join(id).exists(), "no state for {id}");
        assert!(namespaces_of(id).is_empty(), "no namespace for {id}");
        assert!(a.leased().is_empty(), "no lease: {:?}", a.leased());
    };

    // An unknown network.
    let id = container_id("net-bad-name");
    let why = refused(
        a,
        &[
            "create",
            "--network",
            "nosuchnet",
            "--bundle",
            bundle_dir,
            &id,
        ],
    );
    assert!(why.contains("no CNI network named nosuchnet"), "{why}");
    assert!(why.contains(&a.network), "names the networks there: {why}");
    nothing_left(&id);

    // A plugin that is not installed.
    a.write_config(
        "20-missing.conflist",
        &serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "missingplugin",
            "plugins": [{"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local",
                "subnet": format!("{}.0/24", topo.subnet)}},
                {"type": "cm-no-such-plugin"}]
        }),
    );
    let id = container_id("net-bad-plugin");
    let why = refused(
        a,
        &[
            "create",
            "--network",
            "missingplugin",
            "--bundle",
            bundle_dir,
            &id,
        ],
    );
    assert!(why.contains("\"cm-no-such-plugin\""), "{why}");
    assert!(why.contains("--cni-plugin-dir"), "{why}");
    nothing_left(&id);

    // A bad --ip.
    let id = container_id("net-bad-ip");
    let why = refused(
        a,
        &[
            "create",
            "--network",
            &a.network,
            "--ip",
            "10.1.2",
            "--bundle",
            bundle_dir,
            &id,
        ],
    );
    assert!(why.contains("is not an address"), "{why}");
    nothing_left(&id);

    // An address taken: X is checkpointed (its address released), Y takes
    // it; restoring X is refused naming Y, and Y keeps serving.
    let x = container_id("net-bad-x");
    run_networked(a, &bundle, &x, &[]);
    let addr = address_of(&state(a, &x));
    let images = work.path().join("images");
    let images = images.to_str().unwrap();
    ok(a, &["checkpoint", &x, "--images-dir", images]);
    let y = container_id("net-bad-y");
    run_networked(a, &bundle, &y, &["--ip", &addr]);
    let y_state = state(a, &y);
    assert_eq!(address_of(&y_state), addr);
    let stream = connect(&topo, &addr);
    echo(&stream, "before");
    let restore = [
        "restore",
        &x,
        "--bundle",
        bundle_dir,
        "--images-dir",
        images,
        "-d",
    ];
    let (status, _, why) = run_to_files(a.command(&restore), work.path());
    assert!(
        !status.success(),
        "restoring onto a taken address succeeded"
    );
    assert!(
        why.contains(&format!(
            "address {addr} of network {} is taken by container {y}",
            a.network
        )),
        "{why}"
    );
    assert_eq!(state(a, &x)["status"], "checkpointed");
    assert!(namespaces_of(&x).is_empty(), "no namespace made for {x}");
    assert_eq!(state(a, &y), y_state, "{y} is untouched");
    echo(&stream, "after");
    drop(stream);

    // Creating with an address that is taken is refused the same way.
    let z = container_id("net-bad-z");
    let why = refused(
        a,
        &[
            "create",
            "--network",
            &a.network,
            "--ip",
            &addr,
            "--bundle",
            bundle_dir,
            &z,
        ],
    );
    assert!(why.contains(&format!("taken by container {y}")), "{why}");
    assert!(namespaces_of(&z).is_empty());

    // Another CNI user's host-local lease holds it (Y gone, the lease
    // written by hand): refused naming that holder.
    ok(a, &["delete", "--force", &y]);
    std::fs::create_dir_all(a.leases()).unwrap();
    std::fs::write(a.leases().join(&addr), "someone-else\r\neth0").unwrap();
    let (status, _, why) = run_to_files(a.command(&restore), work.path());
    assert!(!status.success());
    assert!(why.contains("CNI container \"someone-else\""), "{why}");
    std::fs::remove_file(a.leases().join(&addr)).unwrap();
    // Free again: the restore goes through.
    let (status, _, why) = run_to_files(a.command(&restore), work.path());
    assert!(status.success(), "{why}");
    assert_eq!(address_of(&state(a, &x)), addr);
    ok(a, &["delete", "--force", &x]);
}
