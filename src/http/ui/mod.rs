//! The ops console (SPEC §12) at `/ui/`: plain HTML, CSS and ES modules, embedded in the
//! binary (no CDN, no build step). The page talks to the JSON API with the admin key the
//! operator pastes; serving the files needs no key (they hold no data).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

use super::ApiError;

/// Scripts, styles, images and API calls from this origin only; no inline code, no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// An embedded file served as `name`: a macro, as `include_bytes!` needs the file's name
/// as a literal.
macro_rules! embed {
    ($name:literal, $file:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!($file),
        }
    };
}

const ASSETS: &[Asset] = &[
    embed!("", "index.html", "text/html; charset=utf-8"),
    embed!("app.js", "app.js", "text/javascript; charset=utf-8"),
    embed!("core.js", "core.js", "text/javascript; charset=utf-8"),
    embed!(
        "settings.js",
        "settings.js",
        "text/javascript; charset=utf-8"
    ),
    embed!("style.css", "style.css", "text/css; charset=utf-8"),
    embed!("favicon.svg", "favicon.svg", "image/svg+xml"),
];

/// `GET /ui` → `/ui/`, so the page's relative asset paths resolve under `/ui/`.
pub async fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// `GET /ui/`: the page.
pub async fn index() -> Result<HttpResponse, ApiError> {
    serve("")
}

/// `GET /ui/{file}`: what the page loads.
pub async fn asset(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(file.as_str())
}

fn serve(name: &str) -> Result<HttpResponse, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound("console file".into()))?;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        // Assets change with the binary: revalidate rather than run a stale console.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    Ok(response.body(asset.body))
}

#[cfg(test)]
mod tests {
    use crate::domain::audit::Action;

    #[test]
    fn the_audit_filter_offers_every_action_and_nothing_else() {
        let page = std::str::from_utf8(include_bytes!("index.html")).unwrap();
        let select = &page[page.find("<select id=\"audit-action\">").unwrap()..];
        let select = &select[..select.find("</select>").unwrap()];
        let offered: Vec<&str> = select
            .split("<option value=\"")
            .skip(1)
            .map(|o| &o[..o.find('"').unwrap()])
            .filter(|v| !v.is_empty())
            .collect();
        let actions: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(offered, actions);
    }
}
