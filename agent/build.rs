//! Links the functions `hyphae-agent` runs at start and on its request paths side by side, so
//! an idle agent maps few pages of its own code (decision 54). Touches nothing but linker
//! arguments of the release `hyphae-agent` binary.
//!
//! The kernel maps a binary's code as it runs, and around each page it faults in it maps the
//! neighbouring ones already in the page cache (fault-around, 64 KiB). Startup runs about 2 MB
//! of functions spread over the whole 9.8 MB of code, so nearly all of it became resident.
//! `link/hot-functions.txt`, written by `cargo xtask hot-functions`, lists those functions;
//! lld's `--symbol-ordering-file` places them first in `.text`.

use std::env;
use std::path::Path;

/// The list of functions, relative to this crate.
const LIST: &str = "link/hot-functions.txt";
/// Set to `0` to link without the order: for a linker other than lld (rustc's default on
/// [`ORDERED_TARGET`] since Rust 1.90), which may not know the option.
const SWITCH: &str = "HYPHAE_LINK_ORDER";
/// The target whose default linker (rust-lld) takes `--symbol-ordering-file`.
const ORDERED_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed={SWITCH}");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let target = env::var("TARGET").as_deref() == Ok(ORDERED_TARGET);
    let switched_off = env::var(SWITCH).as_deref() == Ok("0");
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let list = Path::new(&manifest).join(LIST);
    // Debug builds (tests, CI) link as before; a missing list links unordered.
    if !release || !target || switched_off || !list.exists() {
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
