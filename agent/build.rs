//! Experimental: link the agent's startup and request-path functions together.
fn main() {
    let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("link/hot-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    if std::env::var("PROFILE").as_deref() == Ok("release") {
        println!("cargo:rustc-link-arg-bin=hyphae-agent=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bin=hyphae-agent=-Wl,--no-warn-symbol-ordering");
    }
}
