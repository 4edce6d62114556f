//! Go's JSON syntax errors (`berth_proto::gojson::scan`): never panics, and agrees with
//! serde_json on what a whole JSON document is (serde rejects lone surrogates and numbers
//! out of range that Go's scanner accepts, so only serde's "yes" is binding).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scanned = berth_proto::gojson::scan(data);
    if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() {
        match scanned {
            berth_proto::gojson::Scan::Value(end) => {
                assert!(data[end..].iter().all(u8::is_ascii_whitespace), "{data:?}");
            }
            other => panic!("serde took {data:?}, scan said {other:?}"),
        }
    }
});
