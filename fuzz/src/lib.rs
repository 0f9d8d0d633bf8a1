//! Helpers shared by the fuzz targets.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use spectro_core::validate::Violation;

/// Every property name of the spec documents' JSON Schema (plus `kind`): the names a
/// violation's field path may start with.
pub fn schema_fields() -> &'static BTreeSet<String> {
    static FIELDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        fn walk(v: &serde_json::Value, out: &mut BTreeSet<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                        out.extend(props.keys().cloned());
                    }
                    for child in m.values() {
                        walk(child, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
                _ => {}
            }
        }
        let mut out = BTreeSet::new();
        walk(&spectro_core::schema::document_schema(), &mut out);
        assert!(
            out.contains("nodePools") && out.contains("packs"),
            "the document schema lists the model's fields"
        );
        out.insert("kind".to_string());
        out
    })
}

/// Asserts what `validate` promises of every violation: a plain rule, and a field path that
/// is empty (the whole object) or starts with one of the document's fields.
pub fn check_violations(what: &str, violations: &[Violation]) {
    for v in violations {
        assert!(
            !v.rule.trim().is_empty(),
            "{what}: violation at `{}` has no rule",
            v.path
        );
        if v.path.is_empty() {
            continue;
        }
        let root = v.path.split(['.', '[']).next().unwrap_or_default();
        // A parse failure for an unknown field names that field (which may itself hold
        // "`, ": any of those may end the name).
        let unknown = v.rule.strip_prefix("unknown field `").is_some_and(|r| {
            r.match_indices("`, ")
                .any(|(end, _)| v.path.ends_with(&r[..end]))
        });
        assert!(
            schema_fields().contains(root) || unknown,
            "{what}: violation path `{}` does not start with a field of the document ({v})",
            v.path
        );
    }
}

/// True when `SPECTRO_FUZZ_DEBUG` is set: the targets then say on stderr what each input
/// exercised (which messages parsed, which specs rendered or were refused).
pub fn debug() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SPECTRO_FUZZ_DEBUG").is_some())
}
