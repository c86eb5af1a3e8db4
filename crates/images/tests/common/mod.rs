//! A small but complete synthetic checkpoint, written with the crate's own
//! schema, for the decoder and archive tests (no CRIU needed).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crabmigrate_images::magic;
use criu_proto::images::*;
use criu_proto::prost::Message;

/// Bytes of an image: its magic words then each message length-prefixed.
pub fn image(magics: &[u32], entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in magics {
        out.extend_from_slice(&m.to_ne_bytes());
    }
    for e in entries {
        out.extend_from_slice(&(e.len() as u32).to_ne_bytes());
        out.extend_from_slice(e);
    }
    out
}

fn common(kind: u32, entries: &[Vec<u8>]) -> Vec<u8> {
    image(&[magic::IMG_COMMON, kind], entries)
}

/// Writes a two-process checkpoint into `dir`: pid 1 `sh` with 3 dumped
/// pages, 2 lazy and 1 in the parent... (see the assertions in the tests).
pub fn write_checkpoint(dir: &Path) {
    let w = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    w(
        "inventory.img",
        image(
            &[magic::INVENTORY],
            &[InventoryEntry {
                img_version: 2,
                fdinfo_per_id: Some(true),
                ns_per_id: Some(true),
                lsmtype: Some(0),
                ..Default::default()
            }
            .encode_to_vec()],
        ),
    );
    w(
        "pstree.img",
        common(
            magic::PSTREE,
            &[
                PstreeEntry {
                    pid: 1,
                    ppid: 0,
                    pgid: 1,
                    sid: 1,
                    threads: vec![1, 3],
                }
                .encode_to_vec(),
                PstreeEntry {
                    pid: 2,
                    ppid: 1,
                    pgid: 1,
                    sid: 1,
                    threads: vec![2],
                }
                .encode_to_vec(),
            ],
        ),
    );
    for (pid, comm, files_id) in [(1u32, "sh", 7u32), (2, "sleep", 8)] {
        let core = CoreEntry {
            mtype: 1,
            tc: Some(TaskCoreEntry {
                task_state: 1,
                comm: comm.into(),
                ..Default::default()
            }),
            ids: Some(TaskKobjIdsEntry {
                files_id,
                mnt_ns_id: Some(5),
                ..Default::default()
            }),
            thread_core: Some(ThreadCoreEntry::default()),
        };
        w(
            &format!("core-{pid}.img"),
            common(magic::CORE, &[core.encode_to_vec()]),
        );
        let mm = MmEntry {
            exe_file_id: 100,
            vmas: vec![
                VmaEntry {
                    start: 0x1000,
                    end: 0x5000,
                    status: 1 | (1 << 9),
                    ..Default::default()
                },
                VmaEntry {
                    start: 0x10000,
                    end: 0x12000,
                    status: 1 | (1 << 6),
                    shmid: 100,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        w(
            &format!("mm-{pid}.img"),
            common(magic::MM, &[mm.encode_to_vec()]),
        );
        let pagemap = common(
            magic::PAGEMAP,
            &[
                PagemapHead { pages_id: pid }.encode_to_vec(),
                PagemapEntry {
                    vaddr: 0x1000,
                    compat_nr_pages: 2,
                    flags: Some(4),
                    ..Default::default()
                }
                .encode_to_vec(),
                PagemapEntry {
                    vaddr: 0x3000,
                    compat_nr_pages: 1,
                    flags: Some(4 | 2),
                    nr_pages: Some(1),
                    ..Default::default()
                }
                .encode_to_vec(),
                PagemapEntry {
                    vaddr: 0x4000,
                    compat_nr_pages: 1,
                    flags: Some(2),
                    ..Default::default()
                }
                .encode_to_vec(),
            ],
        );
        w(&format!("pagemap-{pid}.img"), pagemap);
        w(&format!("pages-{pid}.img"), vec![0xa5; 3 * 4096]);
        w(
            &format!("fs-{pid}.img"),
            common(
                magic::FS,
                &[FsEntry {
                    cwd_id: 101,
                    root_id: 102,
                    umask: Some(0o22),
                }
                .encode_to_vec()],
            ),
        );
        w(
            &format!("fdinfo-{files_id}.img"),
            common(
                magic::FDINFO,
                &[
                    FdinfoEntry {
                        id: 103,
                        flags: 0,
                        r#type: 1,
                        fd: 0,
                    }
                    .encode_to_vec(),
                    FdinfoEntry {
                        id: 104,
                        flags: 1,
                        r#type: 2,
                        fd: 1,
                    }
                    .encode_to_vec(),
                    FdinfoEntry {
                        id: 105,
                        flags: 0,
                        r#type: 5,
                        fd: 2,
                    }
                    .encode_to_vec(),
                ],
            ),
        );
    }
    let reg = |id: u32, name: &str| FileEntry {
        r#type: 1,
        id,
        reg: Some(RegFileEntry {
            id,
            name: name.into(),
            flags: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    w(
        "files.img",
        common(
            magic::FILES,
            &[
                reg(100, "/bin/busybox").encode_to_vec(),
                reg(101, "/").encode_to_vec(),
                reg(102, "/").encode_to_vec(),
                reg(103, "/data/log").encode_to_vec(),
                FileEntry {
                    r#type: 2,
                    id: 104,
                    pipe: Some(PipeEntry {
                        id: 104,
                        pipe_id: 4242,
                        flags: 1,
                    }),
                    ..Default::default()
                }
                .encode_to_vec(),
                FileEntry {
                    r#type: 5,
                    id: 105,
                    usk: Some(UnixSkEntry {
                        id: 105,
                        ino: 77,
                        r#type: 1,
                        state: 10,
                        name: b"/run/s\0".to_vec(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
                .encode_to_vec(),
            ],
        ),
    );
    w(
        "mountpoints-5.img",
        common(
            magic::MNTS,
            &[
                MntEntry {
                    fstype: 0,
                    mnt_id: 10,
                    parent_mnt_id: 1,
                    mountpoint: "./".into(),
                    root: "/".into(),
                    source: "/dev/vda".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                MntEntry {
                    fstype: 1,
                    mnt_id: 11,
                    parent_mnt_id: 10,
                    mountpoint: "./proc".into(),
                    root: "/".into(),
                    source: "proc".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                MntEntry {
                    fstype: 5,
                    mnt_id: 12,
                    parent_mnt_id: 10,
                    mountpoint: "./dev/null".into(),
                    root: "/null".into(),
                    source: "udev".into(),
                    ext_key: Some("/dev/null".into()),
                    ..Default::default()
                }
                .encode_to_vec(),
            ],
        ),
    );
    let stats = criu_proto::stats::StatsEntry {
        dump: Some(criu_proto::stats::DumpStatsEntry {
            freezing_time: 10,
            frozen_time: 20,
            memdump_time: 30,
            memwrite_time: 40,
            pages_scanned: 9,
            pages_written: 6,
            pages_lazy: 2,
            ..Default::default()
        }),
        restore: None,
    };
    w(
        "stats-dump",
        image(
            &[magic::IMG_SERVICE, magic::STATS],
            &[stats.encode_to_vec()],
        ),
    );
    w(
        "dump.log",
        b"(00.000001) Version: 4.1.1 (gitid 0)\n".to_vec(),
    );
}
