//! Records the commit the binary is built from (for `presence bench`
//! reports), asking git at build time; `unknown` outside a git checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    // safe.directory: a clone owned by another user (CI, containers) is
    // still the checkout being built.
    let output = Command::new("git")
        .args(["-c", "safe.directory=*"])
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    // --no-optional-locks: a plain `git status` refreshes .git/index, which
    // would make the next build run this again and rebuild the crate.
    let dirty = git(&[
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
    ])
    .is_some_and(|status| !status.is_empty());
    let commit = match commit {
        Some(commit) if dirty => format!("{commit}-dirty"),
        Some(commit) => commit,
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=PRESENCE_COMMIT={commit}");
    // What can make the checkout dirty (target/ is not watched: it would
    // rerun this on every build).
    for path in [
        ".git/HEAD",
        ".git/index",
        ".git/refs",
        "src",
        "tests",
        "benches",
        "docs",
        "scripts",
        "Cargo.toml",
        "README.md",
        "BENCHMARKS.md",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}
