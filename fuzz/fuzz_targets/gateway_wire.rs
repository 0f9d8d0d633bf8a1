//! The gateway wire protocol (`spectro_gateway::wire`): any bytes as the JSON body of every
//! message type the agent and the engine exchange.
//!
//! Properties:
//! - no panic;
//! - a message that parses re-serializes (secrets revealed, as the endpoint and the agent
//!   send them) to JSON that parses back to the same message: equal values through
//!   `serde_json::Value` and through text (types without `PartialEq` compared as `Value`);
//! - serialized without the reveal scope, a message shows no secret: `Paired.credential` and
//!   the account's credentials in `Call::ValidateAccount` read `***`;
//! - a `WireError` becomes a `ProviderError` of its kind (unknown kinds: retryable) and back,
//!   keeping the kind, the throttling delay and the message.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spectro_core::model::{Credentials, PairingRequest};
use spectro_core::provider::ProviderError;
use spectro_core::secret::{with_secrets_revealed, REDACTED};
use spectro_gateway::wire::{
    Assigned, Call, CallResult, Directive, ErrorBody, Heartbeat, HeartbeatAnswer, Paired, Poll,
    Returned, WireError,
};

/// Parses `data` as `T`; when it parses, checks the round trips and returns the message.
fn round_trip<T: Serialize + DeserializeOwned + Debug>(data: &[u8]) -> Option<T> {
    let msg: T = serde_json::from_slice(data).ok()?;
    let name = std::any::type_name::<T>();
    if spectro_fuzz::debug() {
        eprintln!("parsed as {name}");
    }
    let value = with_secrets_revealed(|| serde_json::to_value(&msg))
        .unwrap_or_else(|e| panic!("{name} parsed but does not serialize: {e}: {msg:?}"));
    let back: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{name} does not parse back from {value}: {e}"));
    let again = with_secrets_revealed(|| serde_json::to_value(&back)).expect("serializes");
    assert_eq!(again, value, "{name}: value round trip");
    let text = with_secrets_revealed(|| serde_json::to_vec(&msg)).expect("serializes");
    let back: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "{name} does not parse back from {}: {e}",
            String::from_utf8_lossy(&text)
        )
    });
    let again = with_secrets_revealed(|| serde_json::to_value(&back)).expect("serializes");
    assert_eq!(again, value, "{name}: text round trip");
    Some(msg)
}

fn check_wire_error(w: &WireError) {
    let e = ProviderError::from(w.clone());
    let back = WireError::from(&e);
    let kind = match w.kind.as_str() {
        k @ ("Throttled" | "QuotaExceeded" | "Unauthorized" | "Terminal") => k,
        _ => "Retryable",
    };
    assert_eq!(back.kind, kind, "the kind crosses the wire");
    assert!(
        back.message.ends_with(&w.message),
        "the message crosses the wire"
    );
    if kind == "Throttled" {
        assert_eq!(
            back.retry_after_ms,
            Some(w.retry_after_ms.unwrap_or(1000)),
            "the delay"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(c) = round_trip::<Call>(data) {
        assert!(!c.method().is_empty());
        if let Call::ValidateAccount { account } = &c {
            let redacted = serde_json::to_value(&c).expect("serializes");
            let creds = &redacted["account"]["credentials"];
            let secret = match &account.credentials {
                Credentials::Aws(_) => &creds["aws"]["secretAccessKey"],
                Credentials::Azure(_) => &creds["azure"]["clientSecret"],
                Credentials::Gcp(_) => &creds["gcp"]["serviceAccountJson"],
                Credentials::Vsphere(_) => &creds["vsphere"]["password"],
            };
            assert_eq!(
                secret, REDACTED,
                "a secret is redacted outside the reveal scope"
            );
        }
    }
    if let Some(w) = round_trip::<WireError>(data) {
        let back: WireError =
            serde_json::from_value(serde_json::to_value(&w).expect("ser")).expect("de");
        assert_eq!(back, w, "WireError round trip");
        check_wire_error(&w);
    }
    if let Some(r) = round_trip::<CallResult>(data) {
        if let Err(w) = &r.result {
            check_wire_error(w);
        }
    }
    if let Some(d) = round_trip::<Directive>(data) {
        let back: Directive =
            serde_json::from_value(serde_json::to_value(&d).expect("ser")).expect("de");
        assert_eq!(back, d, "Directive round trip");
    }
    if let Some(p) = round_trip::<Paired>(data) {
        let redacted = serde_json::to_value(&p).expect("serializes");
        assert_eq!(
            redacted["credential"], REDACTED,
            "the credential is redacted outside the reveal scope"
        );
    }
    round_trip::<Returned>(data);
    round_trip::<Heartbeat>(data);
    round_trip::<HeartbeatAnswer>(data);
    round_trip::<Poll>(data);
    round_trip::<Assigned>(data);
    round_trip::<ErrorBody>(data);
    round_trip::<PairingRequest>(data);
});
