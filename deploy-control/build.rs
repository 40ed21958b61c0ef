//! Turns each database's file of named statements, `src/storage/sql/<database>.sql`, into Rust
//! constants (`OUT_DIR/<database>.rs`, included by `storage::sql`), so the SQL stays in `.sql`
//! files a reader (and an editor) sees as SQL while the code names each statement.
//!
//! A section starts with `-- name: CONSTANT`; the comment lines that follow it become the
//! constant's doc comment, the other lines up to the next section its statement (comment lines
//! inside a statement stay in the file only; a trailing `;` is dropped).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("src/storage/sql");
    println!("cargo:rerun-if-changed={}", dir.display());
    // `sqlx::migrate!` embeds the migrations but does not tell cargo about them: without this
    // a new or changed migration is left out of the next build.
    println!("cargo:rerun-if-changed=../migrations");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    for entry in std::fs::read_dir(dir).expect("src/storage/sql is readable") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            println!("cargo:rerun-if-changed={}", path.display());
            let text = std::fs::read_to_string(&path).expect("a .sql file is readable");
            let stem = path.file_stem().expect("a file name").to_string_lossy();
            std::fs::write(Path::new(&out).join(format!("{stem}.rs")), constants(&text))
                .expect("OUT_DIR is writable");
        }
    }
}

/// The constants of one file's sections.
fn constants(text: &str) -> String {
    let mut out = String::new();
    for section in text.split("-- name: ").skip(1) {
        let mut lines = section.lines();
        let name = lines.next().unwrap_or_default().trim();
        let (mut doc, mut sql) = (Vec::new(), Vec::new());
        for line in lines {
            match line.trim().strip_prefix("--") {
                Some(comment) if sql.is_empty() => {
                    doc.push(comment.strip_prefix(' ').unwrap_or(comment))
                }
                Some(_) => {}
                None if line.trim().is_empty() => {}
                None => sql.push(line.trim_end()),
            }
        }
        let sql = sql.join("\n");
        let sql = sql.trim_end_matches(';');
        let doc = doc.join("\n");
        writeln!(out, "#[doc = {doc:?}]\npub const {name}: &str = {sql:?};").expect("a String");
    }
    out
}
