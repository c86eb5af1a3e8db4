use criu_rpc::Features;

#[test]
fn version_and_feature_check_round_trip_real_criu() {
    let Some(criu) = testkit::real_criu("version_and_feature_check_round_trip_real_criu") else {
        return;
    };
    let version = criu.version().expect("VERSION answer");
    assert!(version.is_supported(), "CRIU {version} is older than 4.0");
    let features = criu
        .feature_check(Features::ALL)
        .expect("FEATURE_CHECK answer");
    // The project's kernel: no soft-dirty, userfaultfd present. Asking for
    // everything and getting a mixed answer proves it is CRIU's answer, not
    // our request echoed back.
    assert!(!features.mem_track, "this kernel has no soft-dirty bits");
    assert!(features.lazy_pages);
}

#[test]
fn one_session_answers_several_keep_open_requests() {
    let Some(criu) = testkit::real_criu("one_session_answers_several_keep_open_requests") else {
        return;
    };
    let mut session = criu.session().expect("swrk starts");
    let pid = session.pid();
    let first = session.version().expect("first VERSION");
    let features = session
        .feature_check(Features {
            lazy_pages: true,
            ..Features::default()
        })
        .unwrap();
    // Not asked for, so CRIU says false even where the kernel has it.
    assert!(!features.pidfd_store && features.lazy_pages);
    assert_eq!(session.version().unwrap(), first);
    assert_eq!(session.pid(), pid);
}
