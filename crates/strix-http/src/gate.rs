//! Who may reach a server: the host names it answers to (a DNS-rebinding guard), optional
//! tokens, and the headers that keep its pages out of other sites' frames.
//!
//! A rebinding attack points a name the attacker owns at 127.0.0.1, so a page from that name
//! reaches a server on loopback as same-origin. Its requests carry the attacker's name in
//! `Host`: refusing names the server was not told about (421) stops it. IP literals pass,
//! since the attack needs a name.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Secret;

/// The cookie a good `?token=` sets, so a page's own requests carry it; cookies ignore ports,
/// so the server's port is in its name (two servers on one host keep their own).
const TOKEN_COOKIE: &str = "strix_token_";

/// A token and the user it names (`alice=TOKEN`), if any.
#[derive(Clone, Debug)]
pub struct Token {
    pub user: Option<String>,
    secret: Secret,
}

impl Token {
    pub fn new(user: Option<String>, token: &str) -> Token {
        Token { user, secret: Secret::new(token) }
    }

    /// `TOKEN` or `NAME=TOKEN` (NAME: 1-32 letters, digits, `.`, `_` or `-`). A token with `=`
    /// inside needs a name before it; one whose `=` only end it (base64 padding) does not.
    pub fn parse(text: &str) -> Result<Token, String> {
        let named = text.split_once('=').filter(|(_, token)| !token.chars().all(|c| c == '='));
        let (user, token) = match named {
            Some((user, token)) => {
                let ok = !user.is_empty()
                    && user.len() <= 32
                    && user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                if !ok {
                    return Err(format!(
                        "token user {user:?}: 1-32 letters, digits, '.', '_' or '-' (NAME=TOKEN; a token \
                         containing '=' needs a NAME= before it)"
                    ));
                }
                (Some(user.to_string()), token)
            }
            None => (None, text),
        };
        if token.trim().is_empty() {
            return Err("an empty token guards nothing".into());
        }
        Ok(Token::new(user, token))
    }
}

/// Put on a request by the gate once a token matched: who made it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The user the matching token names (`alice=TOKEN`); `None` for a bare token.
    pub user: Option<String>,
}

/// Host names answered besides loopback names and IP literals, and the tokens (none: open).
#[derive(Clone, Debug, Default)]
pub struct Gate {
    allowed_hosts: Vec<String>,
    any_host: bool,
    tokens: Vec<Token>,
    cookie: String,
}

impl Gate {
    /// A gate answering loopback names, IP literals and `allowed_hosts` (`*`: any name, for a
    /// server behind a proxy that checks names itself). A name with a port, a scheme or a
    /// path could never match a `Host`, so it is refused.
    pub fn new(allowed_hosts: &[String]) -> Result<Gate, String> {
        let any_host = allowed_hosts.iter().any(|h| h == "*");
        let mut names = Vec::new();
        for h in allowed_hosts.iter().filter(|h| *h != "*") {
            let name = h.trim_end_matches('.').to_ascii_lowercase();
            let ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !ok {
                return Err(format!(
                    "allowed host {h:?}: give a bare name such as cam.example.org (no port or scheme)"
                ));
            }
            names.push(name);
        }
        Ok(Gate { allowed_hosts: names, any_host, tokens: Vec::new(), cookie: String::new() })
    }

    /// Every request then needs one of `tokens`; the server listens on `port` (the cookie a
    /// `?token=` sets is this server's own).
    pub fn with_tokens(mut self, tokens: Vec<Token>, port: u16) -> Gate {
        self.tokens = tokens;
        self.cookie = format!("{TOKEN_COOKIE}{port}");
        self
    }

    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Loopback names, IP literals (a rebinding attack needs a name) and the allowed names.
    /// A request with no Host (HTTP/1.0) passes: a browser always sends one.
    pub fn host_allowed(&self, host: &str) -> bool {
        if host.is_empty() || self.any_host {
            return true;
        }
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost"
            || name.ends_with(".localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.allowed_hosts.contains(&name)
    }

    /// The first name a request is addressed to that this server does not answer to: every
    /// `Host` (a second one must not slip past the check of the first) and the authority of
    /// an absolute-form target, which takes precedence over `Host`. One that is not text is no
    /// name we answer to; no name at all (HTTP/1.0) passes.
    fn misdirected(&self, request: &Request) -> Option<String> {
        let hosts = request.headers().get_all(header::HOST).iter().map(|h| h.to_str().ok());
        let authority = request.uri().authority().map(|a| Some(a.as_str()));
        hosts.chain(authority).find_map(|name| match name {
            Some(name) if self.host_allowed(name) => None,
            Some(name) => Some(name.to_string()),
            None => Some("(not text)".to_string()),
        })
    }

    /// The token among ours that `given` is, comparing every one so timing shows nothing of
    /// which (or whether one) matched.
    fn token(&self, given: &str) -> Option<&Token> {
        let mut found = None;
        for t in &self.tokens {
            if t.secret.matches(given) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }

    /// The token a request carries: `Authorization: Bearer`, the cookie, or `?token=` (which
    /// also comes back, to be set as the cookie).
    fn credential<'r>(&self, request: &'r Request) -> Option<(&Token, Option<&'r str>)> {
        let headers = request.headers();
        if let Some(t) = crate::bearer(headers).and_then(|b| self.token(b)) {
            return Some((t, None));
        }
        let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';'));
        let mut cookies = cookies.filter_map(|c| c.trim().strip_prefix(self.cookie.as_str())?.strip_prefix('='));
        if let Some(t) = cookies.find_map(|c| self.token(&percent_decoded(c)?)) {
            return Some((t, None));
        }
        // The cookie keeps the token as the address gave it (percent-encoded, cookie-safe).
        let query = request.uri().query().into_iter().flat_map(|q| q.split('&'));
        query
            .filter_map(|kv| kv.strip_prefix("token="))
            .find_map(|q| self.token(&percent_decoded(q)?).map(|t| (t, Some(q))))
    }
}

/// `router` behind `gate`, with [`security_headers`] on every answer (refusals included).
pub fn guarded(router: axum::Router, gate: Gate) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(Arc::new(gate), guard))
}

/// Frames, content sniffing and referrers: none of them, on every answer.
pub fn security_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A `?token=` in the address must not travel on to other sites.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

async fn guard(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let mut response = check(&gate, request, next).await;
    security_headers(&mut response);
    response
}

async fn check(gate: &Gate, mut request: Request, next: Next) -> Response {
    if let Some(host) = gate.misdirected(&request) {
        let msg = format!("host {host:?} is not served here; add it with --http-allow-host\n");
        return (StatusCode::MISDIRECTED_REQUEST, msg).into_response();
    }
    if gate.tokens.is_empty() {
        return next.run(request).await;
    }
    let Some((token, from_query)) = gate.credential(&request) else {
        let msg = "this needs its token: open /?token=TOKEN, or send Authorization: Bearer TOKEN\n";
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], msg).into_response();
    };
    let cookie = from_query.map(|t| format!("{}={t}; HttpOnly; SameSite=Strict; Path=/", gate.cookie));
    request.extensions_mut().insert(Caller { user: token.user.clone() });
    let mut response = next.run(request).await;
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `%XX` decoded (a `+` stays: browsers send a typed `+` as it is); `None` when that is not
/// UTF-8 or an escape is cut short.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::{get, put};
    use tower_service::Service;

    use super::*;

    #[test]
    fn only_loopback_names_ip_literals_and_allowed_hosts_are_served() {
        let gate = Gate::new(&["cam.example.org.".to_string()]).unwrap();
        for ok in
            ["localhost:8090", "127.0.0.1:8090", "[::1]:8090", "10.1.2.3", "cam.example.org:8090", "LOCALHOST", ""]
        {
            assert!(gate.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example.com:8090", "attacker.test", "cam.example.org.evil.test", "rebind.attacker.example"] {
            assert!(!gate.host_allowed(bad), "{bad}");
        }
        assert!(Gate::new(&["*".to_string()]).unwrap().host_allowed("anything.example"));
        for bad in ["cam.example.org:8090", "http://cam.example.org", "cam/x", ""] {
            assert!(Gate::new(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_parse_with_and_without_a_user() {
        let t = Token::parse("s3cret").unwrap();
        assert_eq!(t.user, None);
        assert!(t.secret.matches("s3cret"));
        let t = Token::parse("alice=tok=en").unwrap();
        assert_eq!(t.user.as_deref(), Some("alice"));
        assert!(t.secret.matches("tok=en"));
        // Base64 padding is part of a bare token, not a name and an empty token.
        for padded in ["q1w2e3r4t5y6u7i8o9p0aA==", "q1w2e3r4t5y6u7i8o9p0aAb="] {
            let t = Token::parse(padded).unwrap();
            assert_eq!(t.user, None, "{padded}");
            assert!(t.secret.matches(padded) && !t.secret.matches("="), "{padded}");
        }
        for bad in ["", "alice= ", "=tok", "a b=tok", "\x1b]0;x=tok"] {
            assert!(Token::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// A router answering `/who` with the caller's user, through the gate.
    fn app(gate: Gate) -> axum::Router {
        let who = |c: Option<axum::Extension<Caller>>| async move {
            c.and_then(|axum::Extension(c)| c.user).unwrap_or_else(|| "-".into())
        };
        guarded(axum::Router::new().route("/who", get(who)).route("/save", put(|| async { "saved" })), gate)
    }

    async fn call(app: &mut axum::Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        app.call(b.body(Body::empty()).unwrap()).await.unwrap()
    }

    async fn text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_rebound_host_gets_421_and_every_answer_refuses_frames() {
        let mut app = app(Gate::new(&[]).unwrap());
        let r = call(&mut app, "PUT", "/save", &[("host", "rebind.attacker.example:8070")]).await;
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
        let not_text = Request::builder()
            .uri("/who")
            .header("host", HeaderValue::from_bytes(b"caf\xe9.example").unwrap())
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.call(not_text).await.unwrap().status(), StatusCode::MISDIRECTED_REQUEST);
        // Found by probing: a second Host, or an absolute-form target naming another host,
        // went through behind an allowed first Host.
        let two_hosts = Request::builder()
            .uri("/who")
            .header("host", "127.0.0.1")
            .header("host", "evil.example")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.call(two_hosts).await.unwrap().status(), StatusCode::MISDIRECTED_REQUEST);
        let absolute =
            Request::builder().uri("http://evil.example/who").header("host", "127.0.0.1").body(Body::empty()).unwrap();
        assert_eq!(app.call(absolute).await.unwrap().status(), StatusCode::MISDIRECTED_REQUEST);
        let allowed = Request::builder()
            .uri("http://localhost:8070/who")
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.call(allowed).await.unwrap().status(), StatusCode::OK);
        for r in [r, call(&mut app, "GET", "/who", &[("host", "127.0.0.1:8070")]).await] {
            assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], "frame-ancestors 'none'");
        }
    }

    #[tokio::test]
    async fn tokens_name_their_callers_by_header_query_and_cookie() {
        let tokens = vec![
            Token::parse("alice=a-token").unwrap(),
            Token::parse("bare-token").unwrap(),
            Token::parse("b64+/x==").unwrap(),
        ];
        let mut app = app(Gate::new(&[]).unwrap().with_tokens(tokens, 8070));
        let r = call(&mut app, "GET", "/who", &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        let r = call(&mut app, "GET", "/who", &[("authorization", "Bearer a-tokenX")]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = call(&mut app, "GET", "/who", &[("authorization", "Bearer a-token")]).await;
        assert_eq!(text(r).await, "alice");
        let r = call(&mut app, "GET", "/who", &[("authorization", "Bearer bare-token")]).await;
        assert_eq!(text(r).await, "-");
        let r = call(&mut app, "GET", "/who?x=1&token=a-token", &[]).await;
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
        assert!(cookie.starts_with("strix_token_8070=a-token;") && cookie.contains("HttpOnly"), "{cookie}");
        assert_eq!(text(r).await, "alice");
        let r = call(&mut app, "GET", "/who", &[("cookie", "other=1; strix_token_8070=a-token")]).await;
        assert_eq!(text(r).await, "alice");
        // Another server's cookie on the same host is not ours.
        let r = call(&mut app, "GET", "/who", &[("cookie", "strix_token_8090=a-token")]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // A token with URL characters, percent-encoded in the address, and kept so in the cookie.
        let r = call(&mut app, "GET", "/who?token=b64%2B%2Fx%3D%3D", &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = call(&mut app, "GET", "/who", &[("cookie", "strix_token_8070=b64%2B%2Fx%3D%3D")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = call(&mut app, "GET", "/who?token=%ZZ", &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}
