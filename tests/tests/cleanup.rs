//! No server and no cluster directory outlive the tests, however the test
//! process ends: an orderly drop, a normal exit with the shared cluster
//! still in its `static`, or SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::db;

const MODE: &str = "CLEANUP_TEST_CHILD_MODE";

/// Not a test of its own: the body of the child process the tests below
/// start. Prints the shared cluster's pid and directory, then either
/// returns (the process exits with the cluster never dropped) or waits to
/// be killed.
#[test]
#[ignore = "run by the other tests of this file in a child process"]
fn child_holds_the_shared_cluster() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let cluster = db::cluster();
    println!(
        "CLUSTER {} {}",
        cluster.pid().unwrap(),
        cluster.root_dir().display()
    );
    if mode == "wait" {
        std::thread::sleep(Duration::from_secs(120));
    }
}

/// Starts the child; returns it with the postmaster pid and cluster dir.
fn spawn_child(mode: &str) -> (std::process::Child, i32, PathBuf) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_holds_the_shared_cluster",
            "--nocapture",
        ])
        .env(MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("CLUSTER ") {
            let (pid, dir) = rest.split_once(' ').unwrap();
            // Keep reading, so the child never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, pid.parse().unwrap(), PathBuf::from(dir));
        }
    }
    let status = child.wait().unwrap();
    panic!("the child exited ({status}) without reporting its cluster");
}

/// Running means: the process exists and is not a zombie waiting to be reaped.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap().trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn assert_gone_soon(pid: i32, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while (running(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!running(pid), "postgres {pid} is still running");
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[test]
fn a_normal_exit_with_the_cluster_in_a_static_leaves_nothing() {
    let (mut child, pid, dir) = spawn_child("exit");
    assert!(child.wait().unwrap().success());
    assert_gone_soon(pid, &dir);
}

#[test]
fn a_killed_test_process_leaves_nothing() {
    let (mut child, pid, dir) = spawn_child("wait");
    assert!(running(pid), "the cluster runs while its owner lives");
    assert!(dir.join("data/PG_VERSION").exists());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_gone_soon(pid, &dir);
}

#[test]
fn dropping_a_cluster_stops_it_and_deletes_its_directory_at_once() {
    let cluster = throwaway_pg::Cluster::start().unwrap();
    let pid = i32::try_from(cluster.pid().unwrap()).unwrap();
    let dir = cluster.root_dir().to_owned();
    assert!(running(pid));
    drop(cluster);
    assert!(!running(pid));
    assert!(!dir.exists());
}

#[test]
fn a_stopped_cluster_restarts_on_the_same_port_with_its_data() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cluster = throwaway_pg::Cluster::start().unwrap();
    let port = cluster.port();
    runtime.block_on(async {
        cluster.create_database("kept", None).await.unwrap();
    });
    cluster.stop().unwrap();
    assert!(cluster.pid().is_none());
    let refused = runtime.block_on(cluster.connect("kept"));
    assert!(refused.is_err(), "a stopped server must refuse connections");
    cluster.restart().unwrap();
    assert_eq!(cluster.port(), port);
    runtime.block_on(async {
        let client = cluster.connect("kept").await.unwrap();
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    });
}
