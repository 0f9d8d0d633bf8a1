//! Prints the JSON Schema of the spec documents: `cargo run --example schema`.

fn main() {
    let schema = spectro::schema::document_schema();
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).expect("a JSON value always serializes")
    );
}
