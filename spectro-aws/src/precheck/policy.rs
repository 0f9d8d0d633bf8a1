//! IAM policy evaluation, for accounts where `iam:SimulatePrincipalPolicy` does not answer:
//! the principal's identity policies (JSON documents) judged for the actions the provider
//! needs. Explicit deny wins; `Action`/`NotAction` with `*` and `?` wildcards (case-insensitive,
//! as IAM matches action names). A statement limited by a `Condition` or to some resources
//! counts as a partial grant (reported as not checked, never as missing); permission
//! boundaries and organization policies are not seen here. No I/O.

use serde_json::Value;

/// What a set of identity policies grants for a list of actions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Actions no statement allows, or a statement denies on every resource.
    pub missing: Vec<String>,
    /// Actions allowed only under a condition or on some resources, or denied under one.
    pub partial: Vec<String>,
}

/// A policy document as IAM returns it: JSON, URL-encoded (RFC 3986) by the API.
pub fn decode_document(raw: &str) -> Option<Value> {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).ok();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?)
                    .ok()
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    serde_json::from_slice(&out).ok()
}

/// True when IAM's `pattern` (with `*` and `?`) matches `action`, ignoring case.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let a: Vec<char> = action.to_ascii_lowercase().chars().collect();
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut ai) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ai < a.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == a[ai]) {
            pi += 1;
            ai += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ai;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ai = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A string or a list of strings.
fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The statements of a policy document (a statement or a list of them).
fn statements(doc: &Value) -> Vec<&Value> {
    match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => Vec::new(),
    }
}

/// How a statement applies to an action: not at all, fully (every resource, no condition),
/// or partly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    No,
    Fully,
    Partly,
}

fn applies(stmt: &Value, action: &str) -> Applies {
    let acts = strings(stmt.get("Action"));
    let not_acts = strings(stmt.get("NotAction"));
    let hit = if stmt.get("Action").is_some() {
        acts.iter().any(|p| action_matches(p, action))
    } else if stmt.get("NotAction").is_some() {
        !not_acts.iter().any(|p| action_matches(p, action))
    } else {
        false
    };
    if !hit {
        return Applies::No;
    }
    let every_resource =
        stmt.get("NotResource").is_none() && strings(stmt.get("Resource")).contains(&"*");
    let conditional = stmt
        .get("Condition")
        .is_some_and(|c| c.as_object().is_some_and(|o| !o.is_empty()));
    if every_resource && !conditional {
        Applies::Fully
    } else {
        Applies::Partly
    }
}

/// Judges `actions` against identity policy documents.
pub fn evaluate(policies: &[Value], actions: &[&str]) -> Evaluation {
    let mut out = Evaluation::default();
    let stmts: Vec<&Value> = policies.iter().flat_map(statements).collect();
    for action in actions {
        let (mut allow, mut deny) = (Applies::No, Applies::No);
        for s in &stmts {
            let effect = s.get("Effect").and_then(Value::as_str).unwrap_or_default();
            let a = applies(s, action);
            let slot = match effect {
                "Allow" => &mut allow,
                "Deny" => &mut deny,
                _ => continue,
            };
            if a == Applies::Fully || (a == Applies::Partly && *slot == Applies::No) {
                *slot = a;
            }
        }
        if deny == Applies::Fully || allow == Applies::No {
            out.missing.push((*action).to_string());
        } else if allow == Applies::Partly || deny == Applies::Partly {
            out.partial.push((*action).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(action_matches("ec2:*", "ec2:RunInstances"));
        assert!(action_matches("EC2:describe*", "ec2:DescribeVpcs"));
        assert!(action_matches(
            "*",
            "elasticloadbalancing:CreateLoadBalancer"
        ));
        assert!(action_matches("ec2:Run?nstances", "ec2:RunInstances"));
        assert!(action_matches("ec2:*Vpc*", "ec2:ModifyVpcAttribute"));
        assert!(!action_matches("ec2:Describe*", "ec2:DeleteVpc"));
        assert!(!action_matches("ec2:RunInstance", "ec2:RunInstances"));
        assert!(!action_matches(
            "elasticloadbalancing:*",
            "ec2:RunInstances"
        ));
    }

    #[test]
    fn deny_wins_and_conditions_are_partial() {
        let docs = vec![
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["ec2:*"], "Resource": "*"},
                {"Effect": "Deny", "Action": "ec2:DeleteVpc", "Resource": "*"},
                {"Effect": "Allow", "Action": "elasticloadbalancing:Describe*", "Resource": "*",
                 "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}},
            ]}),
            json!({"Statement": {"Effect": "Allow", "NotAction": "iam:*",
                                  "Resource": "arn:aws:elasticloadbalancing:*:*:loadbalancer/*"}}),
        ];
        let e = evaluate(
            &docs,
            &[
                "ec2:RunInstances",
                "ec2:DeleteVpc",
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:CreateLoadBalancer",
                "iam:PassRole",
            ],
        );
        assert_eq!(e.missing, vec!["ec2:DeleteVpc", "iam:PassRole"]);
        assert_eq!(
            e.partial,
            vec![
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:CreateLoadBalancer"
            ]
        );
    }

    #[test]
    fn documents_decode_url_encoded_or_plain() {
        let plain = r#"{"Statement":{"Effect":"Allow","Action":"ec2:*","Resource":"*"}}"#;
        let encoded = "%7B%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22ec2%3A%2A%22%2C%22Resource%22%3A%22%2A%22%7D%7D";
        assert_eq!(decode_document(plain), decode_document(encoded));
        assert!(decode_document(plain).is_some());
        assert_eq!(decode_document("%ZZ"), None);
        assert_eq!(decode_document("%7"), None);
        assert_eq!(decode_document(""), None);
    }
}
