//! Registry credentials and challenges: `X-Registry-Auth` as the Engine API sends it,
//! and `WWW-Authenticate` challenges (Basic, Bearer).

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Credentials for one registry, as the Engine API and docker's config.json carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    #[serde(
        default,
        rename = "serveraddress",
        skip_serializing_if = "String::is_empty"
    )]
    pub server_address: String,
    #[serde(
        default,
        rename = "identitytoken",
        skip_serializing_if = "String::is_empty"
    )]
    pub identity_token: String,
    #[serde(
        default,
        rename = "registrytoken",
        skip_serializing_if = "String::is_empty"
    )]
    pub registry_token: String,
}

impl AuthConfig {
    /// Decodes an `X-Registry-Auth` header: base64 (URL-safe or standard, padded or
    /// not) of a JSON AuthConfig. An empty header or `{}` means no credentials.
    pub fn from_header(h: &str) -> Result<Option<Self>, String> {
        let h = h.trim();
        if h.is_empty() {
            return Ok(None);
        }
        let raw = h.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(raw))
            .map_err(|e| format!("invalid X-Registry-Auth header: {e}"))?;
        let mut a: AuthConfig = serde_json::from_slice(&bytes)
            .map_err(|e| format!("invalid X-Registry-Auth header: {e}"))?;
        a.fill_from_auth();
        if a.is_empty() {
            return Ok(None);
        }
        Ok(Some(a))
    }

    /// Decodes an `X-Registry-Config` header (a build's credentials: base64 of a JSON
    /// map from registry to AuthConfig) and picks the entry for `domain` (a reference's
    /// domain; Docker Hub's entry is `https://index.docker.io/v1/`).
    pub fn for_domain_from_config_header(h: &str, domain: &str) -> Result<Option<Self>, String> {
        let raw = h.trim().trim_end_matches('=');
        if raw.is_empty() {
            return Ok(None);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(raw))
            .map_err(|e| format!("invalid X-Registry-Config header: {e}"))?;
        let all: std::collections::BTreeMap<String, AuthConfig> = serde_json::from_slice(&bytes)
            .map_err(|e| format!("invalid X-Registry-Config header: {e}"))?;
        let hub = |d: &str| matches!(d, "docker.io" | "index.docker.io" | "registry-1.docker.io");
        let found = all.into_iter().find(|(k, _)| {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            host == domain || (hub(host) && hub(domain))
        });
        Ok(found
            .map(|(_, mut a)| {
                a.fill_from_auth();
                a
            })
            .filter(|a| !a.is_empty()))
    }

    /// `auth` ("user:password" in base64) into username and password, when those are
    /// missing.
    pub fn fill_from_auth(&mut self) {
        if self.username.is_empty() && !self.auth.is_empty() {
            if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(self.auth.trim()) {
                if let Some((u, p)) = String::from_utf8_lossy(&b).split_once(':') {
                    self.username = u.to_string();
                    self.password = p.to_string();
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }

    /// The header value the Engine API expects (URL-safe base64 of the JSON).
    pub fn to_header(&self) -> String {
        base64::engine::general_purpose::URL_SAFE
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: String,
        scope: String,
    },
}

/// Parses the first challenge of a `WWW-Authenticate` value: `Scheme k="v", k2=v2`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let realm = get("realm");
        if realm.is_empty() {
            return None;
        }
        Some(Challenge::Bearer {
            realm,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[start..i].trim().to_string();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[start..i].trim().to_string();
        }
        if !key.is_empty() {
            out.push((key, val));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_config_header_picks_the_registry() {
        let json = r#"{"https://index.docker.io/v1/":{"username":"hub","password":"p"},"127.0.0.1:5000":{"auth":"dTpw"}}"#;
        let h = base64::engine::general_purpose::URL_SAFE.encode(json);
        let hub = AuthConfig::for_domain_from_config_header(&h, "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(hub.username, "hub");
        let local = AuthConfig::for_domain_from_config_header(&h, "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("u", "p")
        );
        assert!(AuthConfig::for_domain_from_config_header(&h, "other.io")
            .unwrap()
            .is_none());
        assert!(AuthConfig::for_domain_from_config_header("!!", "x").is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: "registry.docker.io".into(),
                scope: "repository:library/busybox:pull".into()
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        // a comma inside quotes stays in the value
        assert_eq!(
            parse_challenge(r#"Bearer realm="http://h/t",scope="repository:a:pull,push""#),
            Some(Challenge::Bearer {
                realm: "http://h/t".into(),
                service: String::new(),
                scope: "repository:a:pull,push".into()
            })
        );
    }

    #[test]
    fn registry_auth_headers() {
        let a = AuthConfig {
            username: "u".into(),
            password: "p+/?".into(),
            server_address: "localhost:5000".into(),
            ..Default::default()
        };
        let h = a.to_header();
        assert_eq!(AuthConfig::from_header(&h).unwrap(), Some(a.clone()));
        assert_eq!(
            AuthConfig::from_header(h.trim_end_matches('=')).unwrap(),
            Some(a)
        );
        assert_eq!(AuthConfig::from_header("").unwrap(), None);
        assert_eq!(AuthConfig::from_header("e30=").unwrap(), None);
        assert!(AuthConfig::from_header("!!!").is_err());
        // "auth" alone
        let h = base64::engine::general_purpose::STANDARD.encode(r#"{"auth":"dTpw"}"#);
        let a = AuthConfig::from_header(&h).unwrap().unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
    }
}
