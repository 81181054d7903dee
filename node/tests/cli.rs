//! The command line: config layering, --print-config, and clear errors.

use std::process::Command;

fn geocache(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_geocache")).args(args).output().expect("run geocache")
}

#[test]
fn print_config_shows_flags_over_file_over_defaults_and_reloads() {
    let dir = std::env::temp_dir().join(format!("geocache-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(&file, "region = \"frankfurt\"\nlat = 50.11\nmax_memory = \"64MiB\"\n").unwrap();
    let out =
        geocache(&["serve", "--config", file.to_str().unwrap(), "--region", "montreal", "--print-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("region = \"montreal\""), "{printed}");
    assert!(printed.contains("lat = 50.11"), "{printed}");
    assert!(printed.contains("http = \"127.0.0.1:7070\""), "{printed}");
    // What --print-config prints is itself a valid config file.
    let again = dir.join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = geocache(&["serve", "--config", again.to_str().unwrap(), "--print-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), printed);
}

#[test]
fn bad_input_names_the_flag() {
    for (args, needle) in [
        (vec!["serve", "--lat", "91", "--print-config"], "--lat"),
        (vec!["serve", "--max-memory", "lots", "--print-config"], "--max-memory"),
        (vec!["serve", "--max-ttl", "0s", "--print-config"], "--max-ttl"),
        (vec!["serve", "--config", "/nonexistent/node.toml"], "/nonexistent/node.toml"),
        (vec!["serve", "--drain-timeout", "1h", "--print-config"], "--drain-timeout"),
        // A replicating node cannot send a 20 MiB value in one frame: it
        // says so, and names the limit.
        (
            vec![
                "serve",
                "--gossip",
                "127.0.0.9:7946",
                "--ca",
                "ca.crt",
                "--cert",
                "node.crt",
                "--key",
                "node.key",
                "--value-bytes-max",
                "20MiB",
                "--print-config",
            ],
            "--value-bytes-max: at most",
        ),
    ] {
        let out = geocache(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn print_config_with_a_data_dir_is_a_valid_config_too() {
    let dir = std::env::temp_dir().join(format!("geocache-cli-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let out =
        geocache(&["serve", "--data-dir", data.to_str().unwrap(), "--fsync", "always", "--print-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("fsync = \"always\"") && printed.contains("data_dir = "), "{printed}");
    assert!(printed.contains("data dir"), "the memory worst case counts the data dir: {printed}");
    let again = dir.join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = geocache(&["serve", "--config", again.to_str().unwrap(), "--print-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), printed);
    assert!(!data.exists(), "--print-config opens nothing");
}
