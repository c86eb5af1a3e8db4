//! `crabmigrate page-server` and `crabmigrate lazy-pages`.

use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{bail, Context};
use criu_rpc::{LazyPagesRequest, PageServerMode, PageServerRequest};

use super::common;
use crate::cli::{Global, LazyPagesArgs, PageServerArgs};

pub fn run(global: &Global, args: &PageServerArgs) -> anyhow::Result<ExitCode> {
    let criu = super::criu(global)?;
    let images = common::open_dir(&args.images_dir, "images directory", true)?;
    let mut request = PageServerRequest::listen(images.as_fd(), &args.address, args.port);
    request.mode = PageServerMode::Child;
    request.lazy_pages = args.lazy_pages;
    request.parent_img = args.parent_dir.clone();
    let (session, info) = criu.page_server(&request)?;
    let pid = info
        .pid
        .context("CRIU did not report the page server's pid")?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "address": args.address, "port": info.port, "pid": pid })
        );
    } else {
        println!(
            "page server listening on {}:{} (pid {pid}), writing to {}",
            args.address,
            info.port,
            args.images_dir.display()
        );
    }
    let status = session
        .wait_pid(pid)
        .context("cannot wait for the page server")?;
    if !status.success() {
        bail!(
            "the page server failed ({status}); see page-server.log in {}",
            args.images_dir.display()
        );
    }
    if !args.json {
        println!("page server done");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_lazy(global: &Global, args: &LazyPagesArgs) -> anyhow::Result<ExitCode> {
    let criu = super::criu(global)?;
    let (address, port) = super::validate::address(&args.page_server, "--page-server")?;
    common::open_dir(&args.images_dir, "images directory", false)?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| args.images_dir.clone());
    common::open_dir(&work_dir, "work directory", true)?;
    let mut daemon = criu.lazy_pages(&LazyPagesRequest {
        images_dir: &args.images_dir,
        work_dir: &work_dir,
        address: &address,
        port,
        log_file: "lazy-pages.log",
        tls_args: Vec::new(),
    })?;
    eprintln!(
        "lazy-pages daemon ready (pid {}); restore with --lazy-pages --work-dir {}",
        daemon.pid().unwrap_or(0),
        work_dir.display()
    );
    let status = daemon.wait().context("cannot wait for criu lazy-pages")?;
    if !status.success() {
        bail!(
            "criu lazy-pages failed ({status}); log: {}",
            daemon.log_file().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
