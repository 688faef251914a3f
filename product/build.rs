//! Builds the crate again when a file is added to `migrations/`: the
//! migrations are embedded at compile time (refinery's
//! `embed_migrations!`), and a new file alone would not be noticed.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
