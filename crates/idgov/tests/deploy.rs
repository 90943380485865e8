//! The deployment files agree with the binary and the repository: every
//! `IDGOV_*` setting they use is one `idgov` reads, every file they mount or
//! copy exists, the container's health check is a real command, and the
//! compose file's directory configuration loads. (No container engine runs
//! on the build machines; this is what can be checked without one.)
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `IDGOV_…` names in a text.
fn settings(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("IDGOV_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn idgov(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_idgov"))
        .args(args)
        .output()
        .expect("the idgov binary runs")
}

/// The settings the binary reads: `[env: …]` in the help of `serve` and of
/// a client command, and `IDGOV_LOG` (read by the log filter).
fn known_settings() -> BTreeSet<String> {
    let mut help = String::new();
    for args in [&["serve", "--help"][..], &["audit", "list", "--help"][..]] {
        let out = idgov(args);
        assert!(out.status.success(), "idgov {args:?}");
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    // clap wraps long help lines: read it as one line.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut known: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|l| l.split(['=', ']']).next())
        .map(|s| s.trim().to_string())
        .collect();
    known.insert("IDGOV_LOG".into());
    assert!(known.contains("IDGOV_LISTEN"), "{known:?}");
    known
}

#[test]
fn every_setting_the_deployment_files_use_is_one_idgov_reads() {
    let known = known_settings();
    for file in [
        "deploy/compose.yaml",
        "deploy/Dockerfile",
        "deploy/idgov.env.example",
        "deploy/idgov.service",
    ] {
        for s in settings(&read(file)) {
            assert!(
                known.contains(&s),
                "{file} sets {s}, which idgov does not read (it reads {known:?})"
            );
        }
    }
}

#[test]
fn every_file_the_deployment_mounts_or_copies_exists() {
    let deploy = root().join("deploy");
    let compose = read("deploy/compose.yaml");
    let mut checked = 0;
    for line in compose.lines().map(str::trim) {
        let line = line.split(" #").next().unwrap_or(line);
        let path = if let Some(v) = line.strip_prefix("- ./").or(line.strip_prefix("- ../")) {
            let prefix = if line.starts_with("- ./") {
                "./"
            } else {
                "../"
            };
            Some(format!("{prefix}{}", v.split(':').next().unwrap_or(v)))
        } else if let Some(f) = line.strip_prefix("file: ") {
            Some(f.to_string())
        } else if let Some(c) = line.strip_prefix("context: ") {
            Some(c.to_string())
        } else {
            line.strip_prefix("dockerfile: ").map(|d| format!("../{d}"))
        };
        if let Some(p) = path {
            let full = deploy.join(p.trim());
            assert!(full.exists(), "compose.yaml names {p}, which is missing");
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "the compose file's mounts were read ({checked})"
    );
    for dockerfile in ["deploy/Dockerfile", "deploy/ldap.Dockerfile"] {
        for line in read(dockerfile).lines() {
            let Some(args) = line.strip_prefix("COPY ") else {
                continue;
            };
            if args.contains("--from=") {
                continue; // from a build stage, not the repository
            }
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            for src in &words[..words.len().saturating_sub(1)] {
                assert!(
                    root().join(src).exists(),
                    "{dockerfile} copies {src}, which is missing"
                );
            }
        }
    }
}

#[test]
fn the_container_health_check_and_start_command_are_real_commands() {
    // The compose health check: `idgov --server URL health` parses, and
    // says clearly when nothing listens there.
    let out = idgov(&["--server", "http://127.0.0.1:9", "health"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach idgov"), "{err}");
    assert!(idgov(&["health", "--help"]).status.success());
    // The image's CMD and the unit's ExecStart.
    assert!(read("deploy/Dockerfile").contains("CMD [\"serve\"]"));
    assert!(read("deploy/idgov.service").contains("ExecStart=/usr/local/bin/idgov serve"));
    // A database URL from a file conflicts with one given directly.
    let out = idgov(&[
        "serve",
        "--database-url",
        "postgres://x",
        "--database-url-file",
        "/nonexistent",
    ]);
    assert!(!out.status.success());
}

#[test]
fn the_compose_directory_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("deploy/compose/directory.toml"),
        dir.path().join("directory.toml"),
    )
    .unwrap();
    // Mounted beside it in the container, from the example.
    std::fs::copy(
        root().join("examples/directory/ldap-password"),
        dir.path().join("ldap-password"),
    )
    .unwrap();
    let cfg = idgov_directory::DirectoryConfig::load(&dir.path().join("directory.toml"));
    assert!(cfg.is_ok(), "{cfg:?}");
}
