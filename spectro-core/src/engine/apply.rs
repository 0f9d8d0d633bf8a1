//! Applying spec documents: the parse-then-put loop every application writes, once.
//!
//! A document of any kind is created or updated by name; applying the same document again
//! changes nothing (no new profile revision, no new cluster generation), so a file can be
//! re-applied safely, like `kubectl apply`.

use crate::error::{CoreError, Result};
use crate::model::document::{parse_documents, Format};
use crate::model::{CloudAccount, ClusterProfile, Document, IpPool, PrivateCloudGateway};
use crate::provider::ClusterId;
use crate::store::ObjectKind;
use crate::validate::Violation;

use super::{decode, profile_key, Engine};

/// What [`Engine::apply`] did with one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyAction {
    /// The object did not exist: created.
    Created,
    /// The object existed and differed: updated.
    Updated,
    /// The object existed with this very spec: nothing written.
    Unchanged,
}

/// The result of applying one document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Applied {
    /// The document's kind, e.g. `Cluster`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// What was done.
    pub action: ApplyAction,
    /// The object's revision after the apply (for a cluster: its generation).
    pub revision: u64,
    /// For a cluster: its id.
    pub cluster: Option<ClusterId>,
}

/// Order in which kinds are applied by [`Engine::apply_all`]: what is referenced first.
fn rank(d: &Document) -> u8 {
    match d {
        Document::PrivateCloudGateway(_) => 0,
        Document::IpPool(_) => 1,
        Document::CloudAccount(_) => 2,
        Document::ClusterProfile(_) => 3,
        Document::Cluster(_) => 4,
    }
}

impl Engine {
    /// Creates or updates the object a document describes (by kind and name): profiles,
    /// cloud accounts, IP pools and gateways are put; a cluster is created when no live
    /// cluster has its name, else updated to the document's spec (a new profile version in
    /// it becomes a pending profile update, see [`Engine::update_notification`]). Applying
    /// the same document twice writes nothing the second time.
    ///
    /// ```no_run
    /// # async fn demo(engine: spectro_core::Engine) -> spectro_core::Result<()> {
    /// use spectro_core::model::document::{parse_documents, Format};
    /// let text = std::fs::read_to_string("cluster.yaml").expect("readable file");
    /// let (docs, failures) = parse_documents(&text, Format::Yaml);
    /// assert!(failures.is_empty(), "{failures:?}");
    /// for doc in &docs {
    ///     let applied = engine.apply(doc).await?;
    ///     println!("{} {}: {:?}", applied.kind, applied.name, applied.action);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn apply(&self, doc: &Document) -> Result<Applied> {
        self.running()?;
        let kind = doc.kind();
        let name = doc.name().to_string();
        let done = |action, revision, cluster| Applied {
            kind,
            name: name.clone(),
            action,
            revision,
            cluster,
        };
        match doc {
            Document::ClusterProfile(p) => {
                let key = profile_key(&p.name, &p.version);
                let old = self
                    .stored::<ClusterProfile>(ObjectKind::Profile, &key)
                    .await?;
                match old {
                    Some((o, rev)) if &o == p => Ok(done(ApplyAction::Unchanged, rev, None)),
                    o => {
                        let rev = self.put_profile(p).await?;
                        Ok(done(created_or_updated(o.is_none()), rev, None))
                    }
                }
            }
            Document::CloudAccount(a) => {
                let old = self
                    .stored::<CloudAccount>(ObjectKind::CloudAccount, &a.name)
                    .await?;
                match old {
                    Some((o, rev)) if same_with_secrets(&o, a) => {
                        Ok(done(ApplyAction::Unchanged, rev, None))
                    }
                    o => {
                        let rev = self.put_cloud_account(a).await?;
                        Ok(done(created_or_updated(o.is_none()), rev, None))
                    }
                }
            }
            Document::IpPool(p) => {
                let old = self.stored::<IpPool>(ObjectKind::IpPool, &p.name).await?;
                match old {
                    Some((o, rev)) if &o == p => Ok(done(ApplyAction::Unchanged, rev, None)),
                    o => {
                        let rev = self.put_ip_pool(p).await?;
                        Ok(done(created_or_updated(o.is_none()), rev, None))
                    }
                }
            }
            Document::PrivateCloudGateway(g) => {
                let old = self
                    .stored::<PrivateCloudGateway>(ObjectKind::Gateway, &g.name)
                    .await?;
                match old {
                    Some((o, rev)) if &o == g => Ok(done(ApplyAction::Unchanged, rev, None)),
                    o => {
                        let rev = self.put_gateway(g).await?;
                        Ok(done(created_or_updated(o.is_none()), rev, None))
                    }
                }
            }
            Document::Cluster(c) => match self.inner.store.find_cluster(&c.name).await? {
                Some(rec) if same_with_secrets(&rec.spec, c) => {
                    Ok(done(ApplyAction::Unchanged, rec.generation, Some(rec.id)))
                }
                Some(rec) => {
                    let generation = self.update_cluster(rec.id, c).await?;
                    Ok(done(ApplyAction::Updated, generation, Some(rec.id)))
                }
                None => {
                    let id = self.create_cluster(c).await?;
                    Ok(done(ApplyAction::Created, 1, Some(id)))
                }
            },
        }
    }

    /// Applies several documents, what is referenced first (gateways, IP pools, cloud
    /// accounts, profiles, then clusters), and stops at the first error (the ones before it
    /// stay applied; applying the set again is safe).
    pub async fn apply_all(&self, docs: &[Document]) -> Result<Vec<Applied>> {
        let mut ordered: Vec<&Document> = docs.iter().collect();
        ordered.sort_by_key(|d| rank(d));
        let mut out = Vec::with_capacity(ordered.len());
        for d in ordered {
            out.push(self.apply(d).await?);
        }
        Ok(out)
    }

    /// Parses a YAML (several `---` documents) or JSON text and applies every document
    /// ([`Engine::apply_all`]). A text that does not parse is refused as a whole with
    /// [`CoreError::Invalid`], each violation naming the document and field.
    pub async fn apply_text(&self, text: &str, format: Format) -> Result<Vec<Applied>> {
        let (docs, failures) = parse_documents(text, format);
        if !failures.is_empty() {
            let violations = failures
                .into_iter()
                .flat_map(|f| {
                    f.violations.into_iter().map(move |v| {
                        let path = if v.path.is_empty() {
                            format!("documents[{}]", f.index)
                        } else {
                            format!("documents[{}].{}", f.index, v.path)
                        };
                        Violation::new(path, v.rule)
                    })
                })
                .collect();
            return Err(CoreError::Invalid {
                kind: "spec documents".into(),
                violations,
            });
        }
        self.apply_all(&docs).await
    }

    async fn stored<T: serde::de::DeserializeOwned>(
        &self,
        kind: ObjectKind,
        key: &str,
    ) -> Result<Option<(T, u64)>> {
        match self.inner.store.get_object(kind, key).await? {
            Some(o) => Ok(Some((decode(kind.as_str(), o.body)?, o.revision))),
            None => Ok(None),
        }
    }
}

fn created_or_updated(new: bool) -> ApplyAction {
    if new {
        ApplyAction::Created
    } else {
        ApplyAction::Updated
    }
}

/// Equality that sees secrets (their `PartialEq` may compare redacted forms): both sides
/// serialized with secrets revealed, in memory only.
fn same_with_secrets<T: serde::Serialize>(a: &T, b: &T) -> bool {
    crate::secret::with_secrets_revealed(
        || matches!((serde_json::to_value(a), serde_json::to_value(b)), (Ok(x), Ok(y)) if x == y),
    )
}
