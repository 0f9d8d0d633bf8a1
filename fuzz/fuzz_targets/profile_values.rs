//! Profile diff (`diff_profiles`, `find_conflicts`, `drop_conflicting_overrides`) and values
//! merge (`merge_values`) on profiles and values built from the input.
//!
//! Properties of `merge_values` (its doc: "mappings merge key by key, anything else
//! replaces"):
//! - merging the empty mapping leaves a mapping unchanged (and replaces anything else);
//! - merging an overlay twice equals merging it once;
//! - every leaf of the overlay (a non-mapping, or an empty mapping) is in the result at its
//!   path; every leaf of the base whose path the overlay does not touch is kept.
//!
//! Properties of `diff_profiles` (profiles with unique pack names, as validation demands):
//! - the diff of a profile with itself is empty;
//! - `Added`/`Removed` name exactly the packs only in the new/old profile, `VersionChanged`,
//!   `DefinitionChanged` and `ManifestsChanged` exactly the packs whose fields differ;
//! - applying the `ValueChanged` entries to the old flattened values gives the new ones, and
//!   a pack whose values differ has at least one `ValueChanged`;
//! - `diff(new, old)` is the mirror image of `diff(old, new)`;
//! - after `drop_conflicting_overrides` no conflict is left.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use spectro_core::model::pack::{flatten_values, merge_values, parse_values};
use spectro_core::model::profile::{diff_profiles, drop_conflicting_overrides, find_conflicts};
use spectro_core::model::{ClusterProfile, Pack, PackChange, PackLayer, ProfileCloud};

const KEYS: [&str; 8] = ["a", "b", "c", "extraArgs", "apiServer", "a.b", "", "x"];

#[derive(Arbitrary, Debug)]
enum Leaf {
    Null,
    Bool(bool),
    Int(i8),
    Float(u8),
    Str(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Tree {
    Leaf(Leaf),
    Map(Vec<(u8, Tree)>),
    Seq(Vec<Leaf>),
}

fn key(k: u8) -> String {
    KEYS[usize::from(k) % KEYS.len()].to_string()
}

fn leaf(l: &Leaf) -> Value {
    match l {
        Leaf::Null => Value::Null,
        Leaf::Bool(b) => Value::Bool(*b),
        Leaf::Int(i) => Value::from(*i),
        Leaf::Float(f) => Value::from(f64::from(*f) / 4.0),
        Leaf::Str(s) => Value::from(["30", "true", "x", "", "1.30.4"][usize::from(*s) % 5]),
        Leaf::Text(t) => Value::from(t.as_str()),
    }
}

fn tree(t: &Tree, depth: usize) -> Value {
    match t {
        Tree::Leaf(l) => leaf(l),
        Tree::Map(_) | Tree::Seq(_) if depth > 4 => Value::Null,
        Tree::Map(entries) => Value::Object(
            entries
                .iter()
                .take(6)
                .map(|(k, v)| (key(*k), tree(v, depth + 1)))
                .collect(),
        ),
        Tree::Seq(items) => Value::Array(items.iter().take(4).map(leaf).collect()),
    }
}

fn mapping(t: &Tree) -> Value {
    match tree(t, 0) {
        v @ Value::Object(_) => v,
        other => {
            let mut m = Map::new();
            m.insert("v".into(), other);
            Value::Object(m)
        }
    }
}

/// Pack values as spectro stores them: YAML text (or any text: not all of it parses).
#[derive(Arbitrary, Debug)]
enum Values {
    Empty,
    Tree(Tree),
    Raw(String),
}

fn values_text(v: &Values) -> String {
    match v {
        Values::Empty => String::new(),
        Values::Tree(t) => serde_norway::to_string(&mapping(t)).unwrap_or_default(),
        Values::Raw(s) => s.clone(),
    }
}

#[derive(Arbitrary, Debug)]
struct ArbPack {
    name: u8,
    layer: u8,
    version: u8,
    values: Values,
    annotations: Vec<(u8, u8)>,
    roles: Vec<u8>,
    manifests: u8,
}

const NAMES: [&str; 7] = [
    "ubuntu",
    "kubernetes",
    "calico",
    "csi",
    "prometheus",
    "a.b",
    "x",
];
const VERSIONS: [&str; 5] = ["1.0.0", "1.30.4", "1.31.1", "22.04", ""];
const LAYERS: [PackLayer; 5] = [
    PackLayer::Os,
    PackLayer::Kubernetes,
    PackLayer::Cni,
    PackLayer::Csi,
    PackLayer::Addon,
];

fn pick<T: Clone>(table: &[T], i: u8) -> T {
    table[usize::from(i) % table.len()].clone()
}

fn pack(p: &ArbPack) -> Pack {
    let mut k = Pack::new(
        pick(&NAMES, p.name),
        pick(&LAYERS, p.layer),
        pick(&VERSIONS, p.version),
    );
    k.values = values_text(&p.values);
    for (a, b) in p.annotations.iter().take(3) {
        k.annotations.insert(
            pick(&["image", "skipK8sInstall", "ports"], *a).to_string(),
            pick(&["true", "false", "ami-0abc"], *b).to_string(),
        );
    }
    k.ansible_roles = p
        .roles
        .iter()
        .take(3)
        .map(|r| format!("role{}", r % 3))
        .collect();
    k.manifests = pick(&["", "kind: ConfigMap\n", "kind: Secret\n"], p.manifests).to_string();
    k
}

#[derive(Arbitrary, Debug)]
enum Change {
    Remove(u8),
    Add(ArbPack),
    Version(u8, u8),
    Values(u8, Values),
    Layer(u8, u8),
    Annotation(u8, u8),
    Manifests(u8, u8),
    Swap(u8, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    base: Tree,
    overlay: Tree,
    packs: Vec<ArbPack>,
    changes: Vec<Change>,
    overrides: Vec<(u8, Tree)>,
}

fn profile(packs: Vec<Pack>) -> ClusterProfile {
    ClusterProfile {
        name: "p".into(),
        version: "1.0.0".into(),
        description: String::new(),
        cloud: ProfileCloud::Any,
        packs,
    }
}

fn unique(packs: &[Pack]) -> bool {
    let names: BTreeSet<&str> = packs.iter().map(|p| p.name.as_str()).collect();
    names.len() == packs.len()
}

/// A key flattening cannot tell apart (`""` is dropped, `a.b` collides with `a: {b}`).
fn ambiguous_keys(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, c)| k.is_empty() || k.contains('.') || ambiguous_keys(c)),
        _ => false,
    }
}

fn flat(text: &str) -> BTreeMap<String, Value> {
    flatten_values(&parse_values(text).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// merge_values

/// Leaves of `v`: non-mappings and empty mappings, with their paths.
fn leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(k.clone());
                leaves(c, path, out);
                path.pop();
            }
        }
        _ => out.push((path.clone(), v.clone())),
    }
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.as_object()?.get(k))
}

/// True when the overlay touches the base leaf at `path`: it has a value at the path, or a
/// non-mapping at a prefix of it.
fn overlay_touches(overlay: &Value, base: &Value, path: &[String]) -> bool {
    let (mut o, mut b) = (overlay, base);
    for k in path {
        // Where either side is not a mapping, the overlay's value replaces the base's.
        let (Some(om), Some(bm)) = (o.as_object(), b.as_object()) else {
            return true;
        };
        let Some(oc) = om.get(k) else {
            return false;
        };
        let Some(bc) = bm.get(k) else {
            return true;
        };
        o = oc;
        b = bc;
    }
    // The overlay has a value at the leaf's path itself: it replaces it or merges into it.
    true
}

fn check_merge(base: &Value, overlay: &Value) {
    // Identity: the empty overlay.
    let mut m = base.clone();
    merge_values(&mut m, &Value::Object(Map::new()));
    if base.is_object() {
        assert_eq!(&m, base, "merging {{}} changed a mapping");
    } else {
        assert_eq!(m, Value::Object(Map::new()), "a non-mapping is replaced");
    }

    // Idempotence.
    let mut once = base.clone();
    merge_values(&mut once, overlay);
    let mut twice = once.clone();
    merge_values(&mut twice, overlay);
    assert_eq!(once, twice, "merging twice differs from merging once");

    // The overlay's leaves win.
    let mut out = Vec::new();
    leaves(overlay, &mut Vec::new(), &mut out);
    for (path, v) in &out {
        let got = at(&once, path).unwrap_or_else(|| panic!("overlay leaf {path:?} missing"));
        if v.as_object().is_some_and(Map::is_empty) {
            assert!(got.is_object(), "overlay {{}} at {path:?} gave {got}");
        } else {
            assert_eq!(got, v, "overlay leaf at {path:?}");
        }
    }
    // The base's leaves the overlay does not touch stay.
    let mut out = Vec::new();
    leaves(base, &mut Vec::new(), &mut out);
    for (path, v) in &out {
        if !overlay_touches(overlay, base, path) {
            assert_eq!(at(&once, path), Some(v), "base leaf at {path:?} lost");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// diff_profiles

fn check_diff(old: &ClusterProfile, new: &ClusterProfile) {
    let changes = diff_profiles(old, new);
    assert!(
        diff_profiles(old, old).is_empty(),
        "diff of a profile with itself"
    );
    let ambiguous = old
        .packs
        .iter()
        .chain(&new.packs)
        .any(|p| ambiguous_keys(&parse_values(&p.values).unwrap_or_default()));

    for p in &new.packs {
        let of = |f: &dyn Fn(&PackChange) -> bool| {
            changes
                .iter()
                .filter(|c| c.pack() == p.name && f(c))
                .count()
        };
        match old.pack_named(&p.name) {
            None => {
                let added = of(
                    &|c| matches!(c, PackChange::Added { version, .. } if *version == p.version),
                );
                assert_eq!(added, 1, "pack {} added", p.name);
                assert_eq!(of(&|_| true), 1, "an added pack has only `Added`");
            }
            Some(o) => {
                let n = of(
                    &|c| matches!(c, PackChange::VersionChanged { from, to, .. } if *from == o.version && *to == p.version),
                );
                assert_eq!(
                    n,
                    usize::from(o.version != p.version),
                    "version of {}",
                    p.name
                );
                let def = o.layer != p.layer
                    || o.annotations != p.annotations
                    || o.ansible_roles != p.ansible_roles;
                let n = of(&|c| matches!(c, PackChange::DefinitionChanged { .. }));
                assert_eq!(n, usize::from(def), "definition of {}", p.name);
                let n = of(&|c| matches!(c, PackChange::ManifestsChanged { .. }));
                assert_eq!(
                    n,
                    usize::from(o.manifests != p.manifests),
                    "manifests of {}",
                    p.name
                );
                assert_eq!(
                    of(&|c| matches!(c, PackChange::Added { .. } | PackChange::Removed { .. })),
                    0
                );

                // Applying the value changes to the old values gives the new ones.
                let mut values = flat(&o.values);
                let want = flat(&p.values);
                let mut n = 0;
                for c in &changes {
                    if let PackChange::ValueChanged {
                        pack,
                        key,
                        from,
                        to,
                    } = c
                    {
                        if *pack != p.name {
                            continue;
                        }
                        n += 1;
                        assert_ne!(from, to, "a value change changes the value");
                        assert_eq!(values.get(key), from.as_ref(), "`from` of {key}");
                        match to {
                            Some(v) => values.insert(key.clone(), v.clone()),
                            None => values.remove(key),
                        };
                    }
                }
                assert_eq!(
                    values, want,
                    "old values + changes = new values ({})",
                    p.name
                );
                // Values that do not parse (validation refuses them) count as empty.
                let parsed =
                    |t: &str| parse_values(t).unwrap_or_else(|_| Value::Object(Map::new()));
                let (ov, nv) = (parsed(&o.values), parsed(&p.values));
                if ov != nv && n == 0 {
                    // Known bug 2: keys flattening cannot tell apart hide a change.
                    assert!(
                        !ambiguous,
                        "values of {} changed ({ov} → {nv}) without a ValueChanged",
                        p.name
                    );
                }
            }
        }
    }
    for o in &old.packs {
        let removed = changes
            .iter()
            .filter(|c| matches!(c, PackChange::Removed { pack } if *pack == o.name))
            .count();
        assert_eq!(
            removed,
            usize::from(new.pack_named(&o.name).is_none()),
            "{} removed",
            o.name
        );
    }

    // The mirror image.
    let back = diff_profiles(new, old);
    let mirror = |c: &PackChange| -> PackChange {
        match c.clone() {
            PackChange::Added { pack, .. } => PackChange::Removed { pack },
            PackChange::Removed { pack } => PackChange::Added {
                version: old
                    .pack_named(&pack)
                    .map(|p| p.version.clone())
                    .unwrap_or_default(),
                pack,
            },
            PackChange::VersionChanged { pack, from, to } => PackChange::VersionChanged {
                pack,
                from: to,
                to: from,
            },
            PackChange::ValueChanged {
                pack,
                key,
                from,
                to,
            } => PackChange::ValueChanged {
                pack,
                key,
                from: to,
                to: from,
            },
            other => other,
        }
    };
    let sorted = |v: Vec<PackChange>| {
        let mut s: Vec<String> = v
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        s.sort();
        s
    };
    assert_eq!(
        sorted(changes.iter().map(mirror).collect()),
        sorted(back),
        "diff(new, old) mirrors diff(old, new)"
    );

    // Dropping the conflicting overrides leaves no conflict.
    let mut overrides = BTreeMap::new();
    for p in new.packs.iter().take(3) {
        overrides.insert(p.name.clone(), p.values.clone());
    }
    for p in old.packs.iter().rev().take(2) {
        overrides.insert(p.name.clone(), p.values.clone());
    }
    check_conflicts(&changes, overrides);
}

fn check_conflicts(changes: &[PackChange], mut overrides: BTreeMap<String, String>) {
    let conflicts = find_conflicts(changes, &overrides);
    for c in &conflicts {
        assert!(
            overrides.contains_key(&c.pack),
            "a conflict names an overridden pack"
        );
    }
    let ambiguous = overrides
        .values()
        .any(|t| ambiguous_keys(&parse_values(t).unwrap_or_default()));
    drop_conflicting_overrides(&mut overrides, &conflicts);
    let left = find_conflicts(changes, &overrides);
    if !left.is_empty() {
        // Known bug 3: an override key with a dot (or an empty key) is never dropped.
        assert!(
            !ambiguous,
            "conflicts left after dropping them: {left:?} (overrides {overrides:?})"
        );
    }
    for t in overrides.values() {
        assert!(!t.trim().is_empty(), "emptied overrides are removed");
    }
}

fuzz_target!(|input: Input| {
    // merge_values
    let (base, overlay) = (tree(&input.base, 0), tree(&input.overlay, 0));
    check_merge(&base, &overlay);
    check_merge(&mapping(&input.base), &mapping(&input.overlay));

    // diff_profiles
    let mut packs: Vec<Pack> = Vec::new();
    for p in input.packs.iter().take(6) {
        let p = pack(p);
        if packs.iter().all(|q| q.name != p.name) {
            packs.push(p);
        }
    }
    let old = profile(packs.clone());
    let mut new = packs;
    for c in input.changes.iter().take(8) {
        let idx = |i: &u8, new: &Vec<Pack>| (!new.is_empty()).then(|| usize::from(*i) % new.len());
        match c {
            Change::Remove(i) => {
                if let Some(i) = idx(i, &new) {
                    new.remove(i);
                }
            }
            Change::Add(p) => {
                let p = pack(p);
                if new.iter().all(|q| q.name != p.name) {
                    new.push(p);
                }
            }
            Change::Version(i, v) => {
                if let Some(i) = idx(i, &new) {
                    new[i].version = pick(&VERSIONS, *v).to_string();
                }
            }
            Change::Values(i, v) => {
                if let Some(i) = idx(i, &new) {
                    new[i].values = values_text(v);
                }
            }
            Change::Layer(i, l) => {
                if let Some(i) = idx(i, &new) {
                    new[i].layer = pick(&LAYERS, *l);
                }
            }
            Change::Annotation(i, a) => {
                if let Some(i) = idx(i, &new) {
                    new[i]
                        .annotations
                        .insert("image".into(), format!("ami-{a}"));
                }
            }
            Change::Manifests(i, m) => {
                if let Some(i) = idx(i, &new) {
                    new[i].manifests = format!("kind: ConfigMap # {m}\n");
                }
            }
            Change::Swap(i, j) => {
                if let (Some(i), Some(j)) = (idx(i, &new), idx(j, &new)) {
                    new.swap(i, j);
                }
            }
        }
    }
    let new = profile(new);
    assert!(unique(&old.packs) && unique(&new.packs));
    check_diff(&old, &new);

    // Overrides from the input against the changes.
    let changes = diff_profiles(&old, &new);
    let overrides: BTreeMap<String, String> = input
        .overrides
        .iter()
        .take(4)
        .map(|(k, t)| {
            (
                pick(&NAMES, *k).to_string(),
                serde_norway::to_string(&mapping(t)).unwrap_or_default(),
            )
        })
        .collect();
    check_conflicts(&changes, overrides);

    // Duplicate pack names (validation refuses them): no panic.
    let mut dup = old.clone();
    dup.packs.extend(new.packs.iter().cloned());
    let _ = diff_profiles(&dup, &new);
    let _ = diff_profiles(&new, &dup);
});
