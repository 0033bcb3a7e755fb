//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the
//! migration files, and cargo does not otherwise know it read them.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
