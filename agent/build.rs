//! Links the functions `hyphae-agent` runs at start and on its request paths side by side, so
//! an idle agent maps few pages of its own code (decision 54). Touches nothing but linker
//! arguments of the release `hyphae-agent` binary.
//!
//! The kernel maps a binary's code as it runs, and around each page it faults in it maps the
//! neighbouring ones already in the page cache (fault-around, 64 KiB). Startup runs about 2 MB
//! of functions spread over the whole 9.8 MB of code, so nearly all of it became resident.
//! `link/hot-functions.txt`, written by `cargo xtask hot-functions`, lists those functions;
//! lld's `--symbol-ordering-file` places them first in `.text`.
//!
//! The same link packs the binary's relative relocations (`-z pack-relative-relocs`, DT_RELR):
//! the loader reads every relocation at start, and as a table of 24-byte entries they were
//! 475 KB of pages that stayed resident; packed they are 9 KB (decision 94). Only glibc 2.36
//! and later load such a binary, so it is packed only when the building host's glibc is that
//! new: an agent is built on the kind of host it runs on.

use std::env;
use std::path::Path;
use std::process::Command;

/// The list of functions, relative to this crate.
const LIST: &str = "link/hot-functions.txt";
/// Set to `0` to link without the order: for a linker other than lld (rustc's default on
/// [`ORDERED_TARGET`] since Rust 1.90), which may not know the option.
const SWITCH: &str = "HYPHAE_LINK_ORDER";
/// The target whose default linker (rust-lld) takes `--symbol-ordering-file`.
const ORDERED_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Set to `0` to link without packed relocations: for a binary bound for an older glibc.
const PACK_SWITCH: &str = "HYPHAE_LINK_PACK_RELOCS";
/// The first glibc whose loader reads packed relative relocations, as (major, minor).
const GLIBC_WITH_RELR: (u32, u32) = (2, 36);

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed={SWITCH}");
    println!("cargo:rerun-if-env-changed={PACK_SWITCH}");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let target = env::var("TARGET").as_deref() == Ok(ORDERED_TARGET);
    // Debug builds (tests, CI) link as before.
    if !release || !target {
        return;
    }
    if env::var(PACK_SWITCH).as_deref() != Ok("0")
        && host_glibc().is_some_and(|v| v >= GLIBC_WITH_RELR)
    {
        println!("cargo:rustc-link-arg-bin=hyphae-agent=-Wl,-z,pack-relative-relocs");
    }
    let switched_off = env::var(SWITCH).as_deref() == Ok("0");
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let list = Path::new(&manifest).join(LIST);
    // A missing list links unordered.
    if switched_off || !list.exists() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=hyphae-agent=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    // A function the list names that this build does not have (renamed, inlined, a symbol
    // hash changed by a new toolchain) is skipped; the bench reports how many were found.
    println!("cargo:rustc-link-arg-bin=hyphae-agent=-Wl,--no-warn-symbol-ordering");
}

/// The building host's glibc as (major, minor), from `getconf GNU_LIBC_VERSION` ("glibc
/// 2.36"); `None` when it cannot be told (another libc, no getconf).
fn host_glibc() -> Option<(u32, u32)> {
    let output = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let version = text.trim().strip_prefix("glibc ")?;
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}
