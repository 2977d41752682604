//! The console's built files (`gateway/console/dist/`, made by `gateway/console/build.mjs` from
//! the TypeScript sources and checked in), embedded in the binary so a replica needs nothing on
//! disk. Served with a strict Content-Security-Policy: scripts and styles only from this origin
//! (WebAssembly compilation allowed for the recording player), no framing.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// The built console (`dist/`).
#[derive(RustEmbed)]
#[folder = "console/dist/"]
pub struct Dist;

/// The page's Content-Security-Policy: nothing from elsewhere, no inline scripts.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Content type by file name.
fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

fn etag(hash: [u8; 32]) -> String {
    let hex: String = hash.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// One embedded file with its headers, or 404.
pub fn file(name: &str) -> Response {
    let Some(f) = Dist::get(name) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let mut resp = f.data.into_owned().into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    if let Ok(v) = HeaderValue::from_str(&etag(f.metadata.sha256_hash())) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: the file names carry no hash, and an upgrade must not mix
    // versions.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}

/// `GET /`: the console page.
pub async fn index() -> Response {
    file("index.html")
}

/// `GET /console/assets/{file}`: scripts, styles and the third-party licences.
pub async fn asset(Path(name): Path<String>) -> Response {
    if name == "index.html" {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    }
    file(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_what_it_loads_are_embedded() {
        let index = Dist::get("index.html").map(|f| f.data.into_owned());
        let index = String::from_utf8(index.unwrap_or_default()).unwrap_or_default();
        assert!(index.contains("<title>"), "index.html not embedded");
        for needed in ["app.js", "app.css"] {
            assert!(
                index.contains(&format!("/console/assets/{needed}")),
                "index.html does not load {needed}"
            );
            assert!(Dist::get(needed).is_some(), "{needed} not embedded");
        }
        let licences = Dist::get("THIRD-PARTY-LICENSES.txt").map(|f| f.data.into_owned());
        let licences = String::from_utf8(licences.unwrap_or_default()).unwrap_or_default();
        for pkg in ["@xterm/xterm", "asciinema-player"] {
            assert!(licences.contains(pkg), "{pkg}'s licence is not shipped");
        }
    }

    #[test]
    fn files_carry_type_and_policy() {
        let r = file("app.js");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("text/javascript; charset=utf-8")
        );
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert!(r.headers().contains_key(header::ETAG));
        assert_eq!(file("nope.js").status(), StatusCode::NOT_FOUND);
        assert_eq!(file("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
