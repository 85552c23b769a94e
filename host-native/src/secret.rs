//! Values that must not leak: [`Secret`] (the serve token, S3 keys) and [`Conninfo`] (a libpq
//! connection string that may hold a password). Neither shows its secret through `Display`,
//! `Debug` or serde; the real text is reached only through `expose()`, called where libpq,
//! `pg_receivewal` or a comparison needs it.

use std::fmt;

use serde::{Serialize, Serializer};

/// What stands in for a hidden value.
const HIDDEN: &str = "***";

/// A value that must not appear in output, logs or JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// The shortest bearer token `serve` accepts: shorter ones can be guessed over the network.
pub const MIN_TOKEN_CHARS: usize = 16;

impl Secret {
    /// Wraps a secret value.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// A bearer token: surrounding whitespace is dropped (it never survives an HTTP header);
    /// what is left must be at least [`MIN_TOKEN_CHARS`] characters.
    pub fn token(text: &str) -> Result<Secret, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err("the token is empty or only whitespace".into());
        }
        let chars = token.chars().count();
        if chars < MIN_TOKEN_CHARS {
            return Err(format!(
                "the token has {chars} characters; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 24`)"
            ));
        }
        Ok(Secret(token.to_owned()))
    }

    /// The real value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Secret {
        Secret::new(text)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({HIDDEN})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(HIDDEN)
    }
}

/// A libpq connection string (`key=value …` or a `postgresql://` URI). `Display`, `Debug` and
/// serde show it with every password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Conninfo(String);

/// Keywords whose values are hidden (`sslpassword` unlocks the client key). libpq's keywords
/// are lower-case; `PASSWORD=` is refused by it, but still not shown.
fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// One `key=value` of a key/value conninfo: the value unescaped, and where the pair is in the
/// text.
struct Pair {
    key: String,
    value: String,
    span: std::ops::Range<usize>,
}

/// Splits a key/value conninfo as libpq does (`conninfo_parse`): `key = value` with optional
/// spaces around `=`, values single-quoted or bare, `\` escaping the next character in both.
fn parse_pairs(text: &str) -> Result<Vec<Pair>, String> {
    let bytes = text.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_space(i);
        if i >= bytes.len() {
            return Ok(pairs);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = text[start..i].to_owned();
        i = skip_space(i);
        if bytes.get(i) != Some(&b'=') {
            return Err(format!("missing \"=\" after \"{key}\""));
        }
        i = skip_space(i + 1);
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err("unterminated quoted string".into()),
                    Some(b'\\') => {
                        if let Some(&b) = bytes.get(i + 1) {
                            value.push(b);
                        }
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&b) = bytes.get(i) {
                if b.is_ascii_whitespace() {
                    break;
                }
                if b == b'\\' {
                    if let Some(&next) = bytes.get(i + 1) {
                        value.push(next);
                    }
                    i += 2;
                } else {
                    value.push(b);
                    i += 1;
                }
            }
        }
        let end = i.min(bytes.len());
        pairs.push(Pair {
            key,
            value: String::from_utf8_lossy(&value).into_owned(),
            span: start..end,
        });
    }
}

fn percent_decode(text: &str) -> String {
    percent_decode_with(text, false)
}

/// Decodes `%XX` escapes (and, with `plus_as_space`, `+` as a space, as in a form-encoded
/// query string); invalid escapes stay as they are. For URIs here and `serve`'s queries.
pub(crate) fn percent_decode_with(text: &str, plus_as_space: bool) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(if plus_as_space && bytes[i] == b'+' {
                b' '
            } else {
                bytes[i]
            });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `postgresql://` URI cut where passwords can be: `[user[:password]@]` after the scheme and
/// `password=` parameters in the query.
struct Uri<'a> {
    /// `postgresql://`.
    scheme: &'a str,
    /// The user name, when a userinfo part (`…@`) is present.
    user: Option<&'a str>,
    /// The password of the userinfo part, still percent-encoded.
    password: Option<&'a str>,
    /// Hosts, database, up to the query.
    middle: &'a str,
    /// The query's `key=value` parameters.
    params: Vec<&'a str>,
}

impl<'a> Uri<'a> {
    fn parse(text: &'a str) -> Option<Uri<'a>> {
        let scheme_len = ["postgresql://", "postgres://"]
            .iter()
            .find(|p| text.starts_with(*p))?
            .len();
        let (scheme, rest) = text.split_at(scheme_len);
        // libpq takes the userinfo up to the first '@' that comes before any '/'. An unencoded
        // '/' in a password hides that '@' from libpq, not from us: any '@' before the query
        // ends a userinfo here, so such a password is hidden too.
        let at = match rest.find(['@', '/']) {
            Some(i) if rest.as_bytes()[i] == b'@' => Some(i),
            _ => rest[..rest.find('?').unwrap_or(rest.len())].rfind('@'),
        };
        let (user, password, rest) = match at {
            Some(at) => {
                let userinfo = &rest[..at];
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                (Some(user), password, &rest[at + 1..])
            }
            None => (None, None, rest),
        };
        let (middle, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        Some(Uri {
            scheme,
            user,
            password,
            middle,
            params: query
                .map(|q| q.split('&').filter(|p| !p.is_empty()).collect())
                .unwrap_or_default(),
        })
    }

    fn param_key(param: &str) -> String {
        percent_decode(param.split_once('=').map_or(param, |(k, _)| k))
    }

    /// The URI again; passwords replaced by `hidden`, or dropped when it is `None`.
    fn render(&self, hidden: Option<&str>) -> String {
        let mut out = self.scheme.to_owned();
        if let Some(user) = self.user {
            out.push_str(user);
            if let (Some(_), Some(h)) = (self.password, hidden) {
                out.push(':');
                out.push_str(h);
            }
            if !user.is_empty() || (self.password.is_some() && hidden.is_some()) {
                out.push('@');
            }
        }
        out.push_str(self.middle);
        let params: Vec<String> = self
            .params
            .iter()
            .filter_map(|p| {
                let key = Self::param_key(p);
                match (is_password_key(&key), hidden) {
                    (false, _) => Some((*p).to_owned()),
                    (true, Some(h)) => Some(format!("{key}={h}")),
                    (true, None) if key == "password" => None,
                    // Only `password` moves out of band; sslpassword has no other way in.
                    (true, None) => Some((*p).to_owned()),
                }
            })
            .collect();
        if !params.is_empty() {
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }

    /// The password libpq would use: the query's last `password=`, else the userinfo's.
    fn password(&self) -> Option<String> {
        self.params
            .iter()
            .rev()
            .find(|p| Self::param_key(p) == "password")
            .map(|p| percent_decode(p.split_once('=').map_or("", |(_, v)| v)))
            .or_else(|| self.password.map(percent_decode))
    }
}

impl Conninfo {
    /// Wraps a connection string.
    pub fn new(text: impl Into<String>) -> Conninfo {
        Conninfo(text.into())
    }

    /// The real string, for libpq.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The string with every password replaced by `***`. A key/value string that does not
    /// parse is hidden whole: where its password ends cannot be told.
    pub fn redacted(&self) -> String {
        if let Some(uri) = Uri::parse(&self.0) {
            return uri.render(Some(HIDDEN));
        }
        match parse_pairs(&self.0) {
            Ok(pairs) => pairs
                .iter()
                .map(|p| {
                    if is_password_key(&p.key) {
                        format!("{}={HIDDEN}", p.key)
                    } else {
                        self.0[p.span.clone()].to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            Err(_) => "(a conninfo that does not parse; not shown)".to_owned(),
        }
    }

    /// The string without its password, and the password, so that a program can be given the
    /// connection string on its command line (which `ps` shows to every user) and the password
    /// out of band. Fails on a key/value string that does not parse.
    pub fn split_password(&self) -> Result<(String, Option<Secret>), String> {
        if let Some(uri) = Uri::parse(&self.0) {
            return Ok((uri.render(None), uri.password().map(Secret)));
        }
        let pairs = parse_pairs(&self.0).map_err(|e| format!("invalid conninfo: {e}"))?;
        let password = pairs
            .iter()
            .rev()
            .find(|p| p.key == "password")
            .map(|p| Secret(p.value.clone()));
        let rest = pairs
            .iter()
            .filter(|p| p.key != "password")
            .map(|p| &self.0[p.span.clone()])
            .collect::<Vec<_>>()
            .join(" ");
        Ok((rest, password))
    }
}

impl fmt::Display for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Conninfo({:?})", self.redacted())
    }
}

impl Serialize for Conninfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(conninfo: &str) -> String {
        let c = Conninfo::new(conninfo);
        let text = c.to_string();
        assert_eq!(format!("{c:?}"), format!("Conninfo({text:?})"));
        assert_eq!(
            serde_json::to_string(&c).expect("json"),
            serde_json::to_string(&text).expect("json")
        );
        text
    }

    #[test]
    fn key_value_passwords_are_hidden_however_written() {
        assert_eq!(
            shown("host=db password=hunter2 user=u"),
            "host=db password=*** user=u"
        );
        assert_eq!(
            shown("host=db password = hunter2 user=u"),
            "host=db password=*** user=u"
        );
        assert_eq!(shown("password  =hunter2"), "password=***");
        assert_eq!(
            shown(r"host=db password='a b\' c' dbname = 'x y'"),
            "host=db password=*** dbname = 'x y'"
        );
        assert_eq!(shown(r"password=a\ b host=h"), "password=*** host=h");
        assert_eq!(shown("sslpassword='k e y'"), "sslpassword=***");
        assert_eq!(shown("PassWord=hunter2"), "PassWord=***");
        assert_eq!(
            shown("host=/run/pg user=postgres"),
            "host=/run/pg user=postgres"
        );
        for broken in [
            "password='unterminated",
            "password hunter2",
            "host=h password",
        ] {
            let text = shown(broken);
            assert!(
                !text.contains("hunter2") && !text.contains("unterminated"),
                "{text}"
            );
        }
    }

    #[test]
    fn uri_passwords_are_hidden() {
        assert_eq!(
            shown("postgresql://u:hunter2@db:5432/postgres"),
            "postgresql://u:***@db:5432/postgres"
        );
        assert_eq!(
            shown("postgres://u@db/postgres?sslmode=require&password=hunter2"),
            "postgres://u@db/postgres?sslmode=require&password=***"
        );
        assert_eq!(
            shown("postgresql://db?password=hunter2&application_name=x&sslpassword=k"),
            "postgresql://db?password=***&application_name=x&sslpassword=***"
        );
        assert_eq!(
            shown("postgresql://u:hun/ter2@db/x"),
            "postgresql://u:***@db/x",
            "an unencoded '/' in the password"
        );
        assert_eq!(
            shown("postgresql://u:hun?ter2@db/x"),
            "postgresql://u:***@db/x",
            "an unencoded '?' in the password"
        );
        assert_eq!(
            shown("postgresql:///postgres?host=/run/pg"),
            "postgresql:///postgres?host=/run/pg"
        );
        assert_eq!(
            shown("postgresql://%70assword@db?%70assword=x"),
            "postgresql://%70assword@db?password=***",
            "an encoded parameter name"
        );
    }

    #[test]
    fn the_password_is_split_off() {
        let split = |c: &str| {
            let (rest, password) = Conninfo::new(c).split_password().expect("parses");
            (rest, password.map(|p| p.expose().to_owned()))
        };
        assert_eq!(
            split("host=db password = 'a b\\'c' user=u"),
            ("host=db user=u".to_owned(), Some("a b'c".to_owned()))
        );
        assert_eq!(split("host=db user=u"), ("host=db user=u".to_owned(), None));
        assert_eq!(
            split("password=first host=h password=second"),
            ("host=h".to_owned(), Some("second".to_owned())),
            "the last one wins, as in libpq"
        );
        assert_eq!(
            split("postgresql://u:p%40ss@db:5432/x?sslmode=require"),
            (
                "postgresql://u@db:5432/x?sslmode=require".to_owned(),
                Some("p@ss".to_owned())
            )
        );
        assert_eq!(
            split("postgresql://:p@db/x?password=q%20r&sslmode=disable"),
            (
                "postgresql://db/x?sslmode=disable".to_owned(),
                Some("q r".to_owned())
            )
        );
        assert!(Conninfo::new("password='x").split_password().is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn tokens_are_long_enough() {
        assert!(Secret::token("   ").is_err());
        assert!(Secret::token("").is_err());
        assert!(Secret::token("short-token-15ch").is_ok());
        assert!(Secret::token("short-token-15c").is_err());
        assert_eq!(
            Secret::token("  0123456789abcdef \n").expect("ok").expose(),
            "0123456789abcdef"
        );
    }
}
