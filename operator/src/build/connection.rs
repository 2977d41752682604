//! Connection URLs the operator builds from referenced credentials (Patroni's user and password,
//! the Redis password). Kubernetes' `$(VAR)` expansion splices values in verbatim, so a password
//! holding `@`, `:`, `/`, `%`, `#` or `?` would break the URL; instead the operator reads the
//! referenced Secrets, percent-encodes the credentials and keeps the finished URLs in an owned
//! Secret (`<cluster>-connection`) that the pods reference. The URL formats are the gateway's
//! (`postgres://`, `redis://`, `rediss://`, `sentinel://`, `sentinels://`, `?cluster=true`), and
//! the gateway percent-decodes what it reads.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use wardengate_crds::RedisMode;

use super::meta;
use crate::labels::names;
use crate::validate::ValidCluster;

/// Key of the Postgres URL in the connection Secret.
pub const DATABASE_URL_KEY: &str = "database-url";
/// Key of the Redis URL in the connection Secret.
pub const REDIS_URL_KEY: &str = "redis-url";

/// Credentials read from the Secrets a spec references (`None`: not read, as in `render`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `username` of `spec.postgres.patroni.credentialsSecretRef`.
    pub database_user: Option<String>,
    /// `password` of `spec.postgres.patroni.credentialsSecretRef`.
    pub database_password: Option<String>,
    /// The key `spec.redis.passwordSecretRef` names.
    pub redis_password: Option<String>,
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so any byte string is safe
/// in a URL's user, password or path segment.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Patroni primary's URL with encoded credentials; `None` unless Postgres is Patroni.
pub fn database_url(v: &ValidCluster, user: &str, password: &str) -> Option<String> {
    let p = v.spec.postgres.patroni.as_ref()?;
    let ssl = p
        .ssl_mode
        .as_deref()
        .map(|m| format!("?sslmode={}", encode(m)))
        .unwrap_or_default();
    Some(format!(
        "postgres://{}:{}@{}:{}/{}{ssl}",
        encode(user),
        encode(password),
        p.primary_host,
        p.port,
        encode(&p.database)
    ))
}

/// The Redis URL, with the encoded `password` when given.
pub fn redis_url(v: &ValidCluster, password: Option<&str>) -> String {
    let r = &v.spec.redis;
    let auth = password
        .map(|p| format!(":{}@", encode(p)))
        .unwrap_or_default();
    let scheme = |plain: &'static str, tls: &'static str| if r.tls { tls } else { plain };
    match r.mode {
        RedisMode::Standalone => format!(
            "{}://{auth}{}",
            scheme("redis", "rediss"),
            r.hosts.first().cloned().unwrap_or_default()
        ),
        RedisMode::Sentinel => format!(
            "{}://{auth}{}/{}",
            scheme("sentinel", "sentinels"),
            r.sentinels.join(","),
            encode(r.master_name.as_deref().unwrap_or_default())
        ),
        RedisMode::Cluster => format!(
            "{}://{auth}{}?cluster=true",
            scheme("redis", "rediss"),
            r.hosts.join(",")
        ),
    }
}

/// The owned Secret with the URLs built from credentials; `None` when the spec needs none
/// (an external URL or CloudNativePG's URI, and Redis without a password). Its data is empty
/// when the credentials were not read (previews). Not immutable: a rotated password is written
/// on the next reconcile and reaches each pod when it restarts.
pub fn connection_secret(
    v: &ValidCluster,
    owner: &Option<OwnerReference>,
    c: &Credentials,
) -> Option<Secret> {
    let patroni = v.spec.postgres.patroni.is_some();
    let redis_auth = v.spec.redis.password_secret_ref.is_some();
    if !patroni && !redis_auth {
        return None;
    }
    let mut data = BTreeMap::new();
    if let (Some(user), Some(pw)) = (&c.database_user, &c.database_password)
        && let Some(url) = database_url(v, user, pw)
    {
        data.insert(DATABASE_URL_KEY.to_string(), ByteString(url.into_bytes()));
    }
    if let Some(pw) = c.redis_password.as_deref().filter(|_| redis_auth) {
        data.insert(
            REDIS_URL_KEY.to_string(),
            ByteString(redis_url(v, Some(pw)).into_bytes()),
        );
    }
    Some(Secret {
        metadata: meta(v, names::connection_secret(&v.name), owner),
        data: (!data.is_empty()).then_some(data),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_leaves_unreserved_characters_and_escapes_the_rest() {
        assert_eq!(encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(encode("p@ss:w/o%r#d?"), "p%40ss%3Aw%2Fo%25r%23d%3F");
        assert_eq!(encode("é "), "%C3%A9%20");
    }
}
