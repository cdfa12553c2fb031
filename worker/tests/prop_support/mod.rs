//! What the property suites share: their configuration (bounded cases, no regression files,
//! a printed seed), hostile text, arbitrary JSON and a runtime for the async front ends.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::SystemTime;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::Value;

/// `cases` cases, no `proptest-regressions/` files, and a seed that is printed (and taken from
/// `PROPTEST_RNG_SEED` when set), so any failure can be replayed exactly.
pub fn config(cases: u32) -> Config {
    let mut c = Config::with_cases(cases);
    c.failure_persistence = None;
    let seed = match c.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => {
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        }
    };
    c.rng_seed = RngSeed::Fixed(seed);
    eprintln!("proptest seed {seed}: replay with PROPTEST_RNG_SEED={seed}");
    c
}

/// Text an attacker would try: any Unicode, control characters, quotes and markup, huge
/// numbers, format strings, injection attempts and near misses of valid values.
pub fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        3 => "[ -~]{0,40}",
        1 => "[\\x00-\\x1f\\x7f\"'<>&%{}\\\\]{1,12}",
        1 => "[0-9]{15,30}",
        1 => prop_oneof![
            Just("%s%n%x".to_string()),
            Just("'; DROP TABLE rules; --".to_string()),
            Just("${jndi:ldap://x}".to_string()),
            Just("../../etc/passwd".to_string()),
            Just("\u{202e}gnp.exe".to_string()),
            Just("[awswl exp=1970-01-01T00:00:00Z]".to_string()),
            Just("\u{feff}22".to_string()),
            Just("２２".to_string()),
        ],
    ]
}

/// Arbitrary JSON (no floats, whose text round trip is not exact), nested a few levels.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        hostile_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One current-thread runtime per test binary, for the async front ends.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
    })
}
