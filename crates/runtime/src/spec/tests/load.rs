use super::*;
use serde_json::json;

#[test]
fn runc_default_loads_without_warnings() {
    let dir = bundle(RUNC_DEFAULT);
    let b = load(dir.path()).expect("the default spec loads");
    let canonical = fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(b.dir, canonical);
    assert_eq!(b.rootfs, canonical.join("rootfs"));
    assert!(b.readonly_rootfs());
    // Capabilities and the device rules are applied, not warned about.
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        b.process().expect("process").args().as_deref(),
        Some(&["sh".to_owned()][..])
    );
    assert_eq!(masked_paths(&b.spec).len(), 10);
    assert_eq!(readonly_paths(&b.spec).len(), 5);
    assert!(devices(&b.spec).is_empty());
    assert!(resources(&b.spec).is_some());
    assert_eq!(
        rootfs_propagation(&b.spec).expect("default propagation"),
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    );
    assert!(b.hooks().is_empty());
    assert_eq!(
        b.cgroup_path("web-1").expect("cgroup path"),
        "/crabmigrate/web-1"
    );
}

#[test]
fn load_accepts_a_relative_bundle_path_and_canonicalises_it() {
    let dir = bundle(RUNC_DEFAULT);
    let dotted = dir.path().join(".").join("rootfs").join("..");
    let b = load(&dotted).expect("loads");
    assert_eq!(b.dir, fs::canonicalize(dir.path()).expect("canonical"));
    assert_eq!(b.config_path(), b.dir.join("config.json"));
}

#[test]
fn unknown_fields_are_warnings() {
    let v = with(base(), "/process/fooBar", json!(1));
    let v = with(v, "/mounts/2/extra", json!("x"));
    let v = with(v, "/linux/somethingNew", json!({"a": 1}));
    let v = with(v, "/linux/ignoredNull", Value::Null);
    let v = with(v, "/annotations", json!({"any.key": "kept"}));
    let dir = bundle(&v.to_string());
    let b = load(dir.path()).expect("loads");
    let unknown: Vec<&String> = b
        .warnings
        .iter()
        .filter(|w| w.starts_with("unknown"))
        .collect();
    assert_eq!(
        unknown,
        [
            "unknown field linux.somethingNew is ignored",
            "unknown field mounts[2].extra is ignored",
            "unknown field process.fooBar is ignored",
        ]
    );
}

#[test]
fn missing_config_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = load(dir.path()).expect_err("no config");
    assert!(matches!(err, SpecError::NoConfig { .. }));
    let canonical = fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(
        err.to_string(),
        format!(
            "bundle {} has no config.json; create one with `runc spec`",
            canonical.display()
        )
    );
}

#[test]
fn missing_bundle_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = dir.path().join("gone");
    let err = load(&gone).expect_err("no bundle");
    assert_eq!(
        err.to_string(),
        format!("bundle {} does not exist", gone.display())
    );
    let file = dir.path().join("file");
    fs::write(&file, "").expect("write");
    assert!(matches!(load(&file), Err(SpecError::BundleNotDir { .. })));
}

#[test]
fn bad_json_reports_line_and_column() {
    let dir = bundle("{\n  \"ociVersion\": \"1.0.2\",\n  \"process\" {}\n}\n");
    let err = load(dir.path()).expect_err("bad JSON");
    match &err {
        SpecError::InvalidJson {
            line,
            column,
            reason,
            ..
        } => {
            assert_eq!((*line, *column), (3, 13));
            assert_eq!(reason, "expected `:`");
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.ends_with("config.json is not valid JSON at line 3 column 13: expected `:`"),
        "{msg}"
    );

    let dir = bundle("{\"ociVersion\": \"1.0.2\"");
    match load(dir.path()) {
        Err(SpecError::InvalidJson {
            line: 1, reason, ..
        }) => {
            assert_eq!(reason, "EOF while parsing an object");
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
}

#[test]
fn json_that_is_not_a_spec() {
    // process.cwd is required.
    let v = with(base(), "/process/cwd", Value::Null);
    let mut text = serde_json::to_string_pretty(&v).expect("to JSON");
    text = text.replace("\"cwd\": null,", "");
    let dir = bundle(&text);
    let err = load(dir.path()).expect_err("no cwd");
    match &err {
        SpecError::InvalidSpec { reason, line, .. } => {
            assert_eq!(reason, "missing field `cwd`");
            assert!(*line > 1);
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    assert!(err
        .to_string()
        .contains("is not a valid OCI runtime spec at line"));

    // A wrong type.
    let dir = bundle(&with(base(), "/process/args", json!("sh")).to_string());
    match load(dir.path()) {
        Err(SpecError::InvalidSpec { reason, .. }) => {
            assert!(
                reason.starts_with("invalid type: string \"sh\""),
                "{reason}"
            );
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }

    // No process, no root, no version.
    for (pointer, field) in [
        ("/process", "process"),
        ("/root", "root"),
        ("/ociVersion", "ociVersion"),
    ] {
        let mut v = base();
        v.as_object_mut().expect("object").remove(&pointer[1..]);
        let spec = spec_of(&v);
        match validate(&spec) {
            Err(SpecError::Missing { field: f }) => assert_eq!(f, field),
            other => panic!("expected Missing {field}, got {other:?}"),
        }
    }
    let spec = spec_of(&with(base(), "/ociVersion", json!("2.0.0")));
    assert_eq!(
        validate(&spec).expect_err("version 2").to_string(),
        "ociVersion \"2.0.0\" is not supported; crabmigrate reads specs of version 1.x"
    );
}

#[test]
fn unknown_namespace_type_is_named() {
    let v = with(base(), "/linux/namespaces/2", json!({"type": "foo"}));
    let dir = bundle(&v.to_string());
    let err = load(dir.path()).expect_err("foo");
    assert_eq!(
        err.to_string(),
        "linux.namespaces[2].type \"foo\" is not a namespace type; \
         use one of pid, network, mount, ipc, uts, cgroup, user"
    );
    // The /proc names are not the spec's.
    let v = with(base(), "/linux/namespaces/1", json!({"type": "net"}));
    assert!(matches!(
        parse_config(v.to_string().as_bytes(), Path::new("config.json")),
        Err(SpecError::UnknownNamespace { index: 1, .. })
    ));
}

#[test]
fn rootfs_must_be_a_directory() {
    let dir = bundle(RUNC_DEFAULT);
    fs::remove_dir(dir.path().join("rootfs")).expect("remove rootfs");
    let err = load(dir.path()).expect_err("no rootfs");
    let canonical = fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(
        err.to_string(),
        format!(
            "the rootfs {} does not exist",
            canonical.join("rootfs").display()
        )
    );
    fs::write(dir.path().join("rootfs"), "").expect("write file");
    assert!(matches!(
        load(dir.path()),
        Err(SpecError::RootfsNotDir { .. })
    ));

    // An absolute root.path is used as it is.
    let other = tempfile::tempdir().expect("tempdir");
    let v = with(base(), "/root/path", json!(other.path()));
    fs::write(dir.path().join("config.json"), v.to_string()).expect("write");
    let b = load(dir.path()).expect("absolute rootfs");
    assert_eq!(b.rootfs, fs::canonicalize(other.path()).expect("canonical"));
}

#[test]
fn runc_spec_output_loads() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let runc = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("runc"))
        .find(|p| p.is_file());
    let Some(runc) = runc else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("runc is not installed; scripts/setup.sh installs it");
        }
        println!("SKIPPED runc_spec_output_loads: runc is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new(runc)
        .arg("spec")
        .current_dir(dir.path())
        .status()
        .expect("run runc spec");
    assert!(status.success(), "runc spec: {status}");
    fs::create_dir(dir.path().join("rootfs")).expect("rootfs");
    let b = load(dir.path()).expect("runc's spec loads");
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert!(
        !b.warnings.iter().any(|w| w.starts_with("unknown field")),
        "{:?}",
        b.warnings
    );
    let ns = b.namespaces().expect("namespaces");
    assert!(ns.contains(NamespaceKind::Mount) && ns.contains(NamespaceKind::Pid));
    assert!(ns.join.is_empty());
    b.mounts().expect("mounts");
}
