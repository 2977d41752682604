//! `--redis-url` (`RedisTarget::parse`) and `--database-url` (`config::parse_database_url`):
//! any string gives a target or an error, never a panic; an accepted Redis URL redacts and
//! lists its endpoints without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardengate::config::parse_database_url;
use wardengate::redis_url::RedisTarget;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = RedisTarget::parse(s) {
        let _ = t.redacted();
        let _ = format!("{t:?}");
        for hp in t.endpoints() {
            let _ = hp.to_string();
        }
    }
    if let Ok(u) = parse_database_url(s) {
        assert!(matches!(u.scheme(), "postgres" | "postgresql"));
    }
});
