use super::*;
use serde_json::json;

#[test]
fn mount_option_parsing() {
    let flags = |opts: &[&str]| {
        let owned: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        parse_mount_options(&owned)
    };
    use MsFlags as F;
    let cases: &[(&[&str], MsFlags, MsFlags, MsFlags, &str)] = &[
        // options, flags, cleared, propagation, data
        (&[], F::empty(), F::empty(), F::empty(), ""),
        (&["ro"], F::MS_RDONLY, F::empty(), F::empty(), ""),
        (&["ro", "rw"], F::empty(), F::MS_RDONLY, F::empty(), ""),
        (&["rw", "ro"], F::MS_RDONLY, F::empty(), F::empty(), ""),
        (
            &["nosuid", "nodev", "noexec", "relatime"],
            F::MS_NOSUID | F::MS_NODEV | F::MS_NOEXEC | F::MS_RELATIME,
            F::empty(),
            F::empty(),
            "",
        ),
        (
            &["suid", "dev", "exec", "norelatime"],
            F::empty(),
            F::MS_NOSUID | F::MS_NODEV | F::MS_NOEXEC | F::MS_RELATIME,
            F::empty(),
            "",
        ),
        (
            &["strictatime"],
            F::MS_STRICTATIME,
            F::empty(),
            F::empty(),
            "",
        ),
        (&["bind"], F::MS_BIND, F::empty(), F::empty(), ""),
        (
            &["rbind"],
            F::MS_BIND | F::MS_REC,
            F::empty(),
            F::empty(),
            "",
        ),
        (
            &["rbind", "rprivate"],
            F::MS_BIND | F::MS_REC,
            F::empty(),
            F::MS_PRIVATE | F::MS_REC,
            "",
        ),
        (&["private"], F::empty(), F::empty(), F::MS_PRIVATE, ""),
        (&["slave"], F::empty(), F::empty(), F::MS_SLAVE, ""),
        (
            &["rslave"],
            F::empty(),
            F::empty(),
            F::MS_SLAVE | F::MS_REC,
            "",
        ),
        (&["shared"], F::empty(), F::empty(), F::MS_SHARED, ""),
        (
            &["rshared", "private"],
            F::empty(),
            F::empty(),
            F::MS_PRIVATE,
            "",
        ),
        (
            &["remount", "ro"],
            F::MS_REMOUNT | F::MS_RDONLY,
            F::empty(),
            F::empty(),
            "",
        ),
        (
            &["sync", "dirsync", "mand"],
            F::MS_SYNCHRONOUS | F::MS_DIRSYNC | F::MS_MANDLOCK,
            F::empty(),
            F::empty(),
            "",
        ),
        (&["defaults"], F::empty(), F::empty(), F::empty(), ""),
        (
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
            F::MS_NOSUID | F::MS_STRICTATIME,
            F::empty(),
            F::empty(),
            "mode=755,size=65536k",
        ),
        (
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
            F::MS_NOSUID | F::MS_NOEXEC,
            F::empty(),
            F::empty(),
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
    ];
    for (opts, f, cleared, prop, data) in cases {
        let parsed = flags(opts);
        assert_eq!(parsed.flags, *f, "{opts:?} flags");
        assert_eq!(parsed.cleared, *cleared, "{opts:?} cleared");
        assert_eq!(parsed.propagation, *prop, "{opts:?} propagation");
        assert_eq!(parsed.data, *data, "{opts:?} data");
        assert!(parsed.extensions.is_empty());
    }
    let parsed = flags(&["rro", "idmap", "size=1m"]);
    assert_eq!(parsed.extensions, ["rro", "idmap"]);
    assert_eq!(parsed.data(), Some("size=1m"));
    assert_eq!(flags(&["ro"]).data(), None);
    assert!(flags(&["rbind"]).is_bind() && flags(&["rbind"]).is_recursive());
}

#[test]
fn mounts_are_classified() {
    let v = with(
        base(),
        "/mounts/7",
        json!({"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]}),
    );
    let v = with(
        v,
        "/mounts/8",
        json!({"destination": "etc/hosts", "type": "none", "source": "/etc/hosts", "options": ["bind"]}),
    );
    let spec = spec_of(&v);
    let list = mounts(&spec, Path::new("/bundle")).expect("mounts");
    let kinds: Vec<MountKind> = list.iter().map(|m| m.kind).collect();
    use MountKind::*;
    assert_eq!(
        kinds,
        [Proc, Tmpfs, Devpts, Tmpfs, Mqueue, Sysfs, Cgroup, Bind, Bind]
    );
    assert_eq!(list[7].source.as_deref(), Some(Path::new("/bundle/data")));
    assert_eq!(
        list[7].options.flags,
        MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
    );
    assert_eq!(list[8].source.as_deref(), Some(Path::new("/etc/hosts")));
    assert_eq!(list[8].destination, Path::new("/etc/hosts"));
    assert_eq!(list[0].source.as_deref(), Some(Path::new("proc")));
    assert_eq!(
        list[6].options.flags,
        MsFlags::MS_NOSUID
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_NODEV
            | MsFlags::MS_RELATIME
            | MsFlags::MS_RDONLY
    );

    let spec = spec_of(&with(base(), "/mounts/3/type", json!("nfs")));
    match mounts(&spec, Path::new("/b")) {
        Err(SpecError::Unsupported { fields }) => assert_eq!(fields, ["mounts[3].type=nfs"]),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn namespaces_split_create_and_join() {
    let v = with(base(), "/linux/namespaces/1/path", json!("/proc/42/ns/net"));
    let v = with(v, "/linux/namespaces/2/path", json!("/run/ipcns"));
    let ns = namespaces(&spec_of(&v)).expect("namespaces");
    assert_eq!(
        ns.create,
        [
            NamespaceKind::Pid,
            NamespaceKind::Uts,
            NamespaceKind::Mount,
            NamespaceKind::Cgroup
        ]
    );
    assert_eq!(
        ns.join,
        [
            (NamespaceKind::Network, PathBuf::from("/proc/42/ns/net")),
            (NamespaceKind::Ipc, PathBuf::from("/run/ipcns")),
        ]
    );
    assert_eq!(
        ns.clone_flags(),
        CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWCGROUP
    );
    assert!(ns.contains(NamespaceKind::Network));
    assert_eq!(
        ns.join_path(NamespaceKind::Ipc),
        Some(Path::new("/run/ipcns"))
    );
    assert_eq!(ns.join_path(NamespaceKind::Pid), None);

    let names: Vec<(&str, &str)> = NamespaceKind::ALL
        .iter()
        .map(|k| (k.spec_name(), k.proc_name()))
        .collect();
    assert_eq!(
        names,
        [
            ("pid", "pid"),
            ("mount", "mnt"),
            ("uts", "uts"),
            ("ipc", "ipc"),
            ("network", "net"),
            ("cgroup", "cgroup"),
            ("user", "user")
        ]
    );

    let v = with(base(), "/linux/namespaces/5", json!({"type": "time"}));
    match namespaces(&spec_of(&v)) {
        Err(SpecError::Unsupported { fields }) => {
            assert_eq!(fields, ["linux.namespaces[time]"])
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let mut v = base();
    v["linux"]
        .as_object_mut()
        .expect("linux")
        .remove("namespaces");
    assert_eq!(
        namespaces(&spec_of(&v)).expect("none"),
        Namespaces::default()
    );
}
