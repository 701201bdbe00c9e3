//! Link `skiff` as a position-dependent executable, like runc: a PIE of this size spends
//! about a millisecond at every start applying ~29k relocations (and copying the pages
//! they touch), and `skiff runtime run` is measured in single milliseconds.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
