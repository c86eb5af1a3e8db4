use super::*;
use serde_json::json;

#[test]
fn process_checks() {
    let spec = spec_of(&with(base(), "/process/args", json!([])));
    assert!(matches!(validate(&spec), Err(SpecError::EmptyArgs)));
    let spec = spec_of(&with(base(), "/process/args", json!([""])));
    assert!(matches!(validate(&spec), Err(SpecError::EmptyArgs)));
    let spec = spec_of(&with(base(), "/process/args", Value::Null));
    assert_eq!(
        validate(&spec).expect_err("no args").to_string(),
        "process.args is empty; it must name the program to run"
    );
    let spec = spec_of(&with(base(), "/process/cwd", json!("home")));
    assert_eq!(
        validate(&spec).expect_err("relative cwd").to_string(),
        "process.cwd home is not absolute"
    );
    let spec = spec_of(&with(base(), "/process/env/1", json!("NOEQUALS")));
    assert_eq!(
        validate(&spec).expect_err("bad env").to_string(),
        "process.env[1] \"NOEQUALS\" is not of the form KEY=VALUE"
    );
}

#[test]
fn other_validation() {
    let err = |v: Value| validate(&spec_of(&v)).expect_err("invalid").to_string();
    assert_eq!(
        err(with(base(), "/linux/namespaces/4", json!({"type": "pid"}))),
        "linux.namespaces lists the pid namespace more than once"
    );
    assert_eq!(
        err(with(
            base(),
            "/linux/namespaces/4",
            json!({"type": "cgroup"})
        )),
        "linux.namespaces lists the cgroup namespace more than once"
    );
    assert!(err(with(
        base(),
        "/linux/namespaces",
        json!([{"type": "pid"}, {"type": "uts"}])
    ))
    .starts_with("linux.namespaces has no mount namespace"));
    assert_eq!(
        err(with(
            base(),
            "/linux/namespaces",
            json!([{"type": "mount"}])
        )),
        "hostname needs a UTS namespace; add {\"type\": \"uts\"} to linux.namespaces"
    );
    assert_eq!(
        err(with(
            base(),
            "/linux/namespaces/1/path",
            json!("proc/1/ns/net")
        )),
        "linux.namespaces[1].path proc/1/ns/net is not absolute"
    );
    assert_eq!(
        err(with(base(), "/linux/rootfsPropagation", json!("sideways"))),
        "linux.rootfsPropagation \"sideways\" is not a propagation type; use private, \
         rprivate, slave, rslave, shared, rshared, unbindable or runbindable"
    );
    assert_eq!(
        err(with(base(), "/linux/cgroupsPath", json!("relative/path"))),
        "linux.cgroupsPath \"relative/path\" is not absolute; use an absolute path such as /crabmigrate/ID"
    );
    assert_eq!(
        err(with(
            base(),
            "/hooks/poststop",
            json!([{"path": "bin/true"}])
        )),
        "hooks.poststop[0].path bin/true is not absolute"
    );
    assert_eq!(
        err(with(
            base(),
            "/mounts/0",
            json!({"destination": "/data", "type": "bind"})
        )),
        "mounts[0] is a bind mount of nothing; set its source to the host path to mount at /data"
    );
    assert_eq!(
        err(with(
            base(),
            "/linux/devices",
            json!([{"path": "/tmp/x", "type": "c"}])
        )),
        "linux.devices[0].path /tmp/x is not a path under /dev"
    );
    assert_eq!(
        err(with(
            base(),
            "/linux/devices",
            json!([{"path": "/dev/x", "type": "a"}])
        )),
        "linux.devices[0].type \"a\" is not a device type; use c, b, u or p"
    );
}

#[test]
fn id_validation() {
    let long_ok = "a".repeat(MAX_ID_LEN);
    let too_long = "a".repeat(MAX_ID_LEN + 1);
    let cases: &[(&str, bool)] = &[
        ("web", true),
        ("Web_1.2+3-4", true),
        ("a..b", true),
        ("...", true),
        (&long_ok, true),
        ("", false),
        (".", false),
        ("..", false),
        ("a/b", false),
        ("/", false),
        ("a b", false),
        ("ä", false),
        ("a:b", false),
        ("a\0b", false),
        ("a\nb", false),
        (&too_long, false),
    ];
    for (id, ok) in cases {
        assert_eq!(validate_id(id).is_ok(), *ok, "{id:?}");
    }
    assert_eq!(
        validate_id("a/b").expect_err("slash").to_string(),
        "the container id \"a/b\" contains '/'; use only letters, digits, '_', '.', '+' and '-'"
    );
    assert_eq!(
        validate_id("").expect_err("empty").to_string(),
        "the container id is empty"
    );
    assert_eq!(
        validate_id(&too_long).expect_err("long").to_string(),
        "the container id is 1025 bytes long; the limit is 1024"
    );
}

#[test]
fn cgroup_paths() {
    let spec = spec_of(&base());
    assert_eq!(
        cgroup_path(&spec, "c1").expect("default"),
        "/crabmigrate/c1"
    );
    assert!(matches!(
        cgroup_path(&spec, "../x"),
        Err(SpecError::BadId { .. })
    ));
    let with_path = |p: &str| spec_of(&with(base(), "/linux/cgroupsPath", json!(p)));
    assert_eq!(cgroup_path(&with_path("/a/b"), "x").expect("given"), "/a/b");
    assert_eq!(
        cgroup_path(&with_path("//a/./b/"), "x").expect("normalised"),
        "/a/b"
    );
    assert_eq!(
        cgroup_path(&with_path(""), "x").expect("empty is unset"),
        "/crabmigrate/x"
    );
    for (path, reason) in [
        ("a/b", "is not absolute"),
        (
            "system.slice:crabmigrate:x",
            "looks like a systemd slice:prefix:name",
        ),
        ("/a/../b", "contains \"..\""),
        ("/", "is the cgroup root"),
    ] {
        match cgroup_path(&with_path(path), "x") {
            Err(SpecError::BadCgroupsPath { reason: r, .. }) => {
                assert!(r.starts_with(reason), "{path}: {r}")
            }
            other => panic!("{path}: expected BadCgroupsPath, got {other:?}"),
        }
    }
}

#[test]
fn user_namespaces_need_id_mappings() {
    let err = |v: Value| validate(&spec_of(&v)).expect_err("invalid").to_string();
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let userns = with(base(), "/linux/namespaces/6", json!({"type": "user"}));
    let no_maps = err(userns.clone());
    assert!(no_maps.contains("without linux.uidMappings"), "{no_maps}");
    let ok = with(userns.clone(), "/linux/uidMappings", map.clone());
    let ok = with(ok, "/linux/gidMappings", map.clone());
    validate(&spec_of(&ok)).expect("a user namespace with both maps");
    assert!(check_supported(&spec_of(&ok)).is_ok());
    let ns = namespaces(&spec_of(&ok)).expect("namespaces");
    assert!(ns.create.contains(&NamespaceKind::User));
    assert_eq!(NamespaceKind::User.clone_flag(), CloneFlags::CLONE_NEWUSER);
    let maps_only = with(base(), "/linux/uidMappings", map.clone());
    let maps_only = with(maps_only, "/linux/gidMappings", map);
    let e = err(maps_only);
    assert!(e.contains("needs a new user namespace"), "{e}");
    let empty = with(
        userns,
        "/linux/uidMappings",
        json!([{"containerID": 0, "hostID": 1, "size": 0}]),
    );
    let empty = with(
        empty,
        "/linux/gidMappings",
        json!([{"containerID": 0, "hostID": 1, "size": 1}]),
    );
    let e = err(empty);
    assert!(e.contains("linux.uidMappings[0] is empty"), "{e}");
}
