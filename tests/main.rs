//! The end-to-end tests, one test binary (as ripgrep and just have it): one
//! link instead of one per file, the helpers in common/ compiled once. Each
//! file of tests/ is a module; `cargo test --test main MODULE::` runs one
//! file's tests.

mod common;

mod auto;
mod bad_input;
mod completions;
mod costs;
mod detach;
mod etcd;
mod etcd_client;
mod etcd_cluster;
mod etcd_faults;
mod etcd_instance;
mod etcd_replace;
mod etcd_slots;
mod etcd_tls;
mod flock;
mod flock_churn;
mod help;
mod instance;
mod launcher;
mod library;
mod library_etcd;
mod list;
mod max_time;
mod modes;
mod packaging;
mod races;
mod replace;
mod respawn;
mod shared;
mod slots;
mod tcp;
mod transparency;

/// With `autotests = false` cargo builds only this file: a test file added
/// to tests/ but not declared above would never run, silently.
#[test]
fn every_file_of_tests_is_a_module_here() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(tests.join("main.rs")).unwrap();
    let missing: Vec<String> = std::fs::read_dir(&tests)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir() || path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .filter(|module| module != "main" && !main.contains(&format!("\nmod {module};\n")))
        .collect();
    assert!(missing.is_empty(), "not in tests/main.rs: {missing:?}");
}
