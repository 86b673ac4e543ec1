//! Bearer tokens: HS256 JWTs with `sub` (user), `tenant` and `exp`, issued and checked by [`JwtAuth`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use converge_core::{ApiError, Authenticator, Code, Scope};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The claims of a Converge token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The tenant everything the token reads or writes is inside.
    pub tenant: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// What the token may do, space separated (OAuth style): `sync:read` (pull, records,
    /// events) and `sync:write` (push). Absent: both. Words it does not know are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The entity types the token may write and read. Absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<String>>,
}

/// The scope word that allows pulling, reading records and subscribing.
pub const SCOPE_READ: &str = "sync:read";
/// The scope word that allows pushing.
pub const SCOPE_WRITE: &str = "sync:write";

impl Claims {
    /// What these claims allow.
    pub fn access(&self) -> converge_core::Access {
        let (read, write) = match &self.scope {
            None => (true, true),
            Some(words) => {
                let has = |w: &str| words.split_whitespace().any(|x| x == w);
                (has(SCOPE_READ), has(SCOPE_WRITE))
            }
        };
        converge_core::Access { read, write, entities: self.entities.as_ref().map(|e| e.iter().cloned().collect()) }
    }
}

/// Issues and checks HS256 tokens with one shared secret.
#[derive(Clone)]
pub struct JwtAuth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth").finish_non_exhaustive()
    }
}

/// The longest tenant or user name a token may carry.
const MAX_NAME: usize = 255;

impl JwtAuth {
    /// An authenticator for tokens signed with `secret` (HS256).
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        // RFC 7519 §4.1.4: a token is valid only before `exp`. jsonwebtoken refuses `exp < now`, so
        // without this a token minted with a TTL of 0 s would work until the clock ticks.
        validation.reject_tokens_expiring_in_less_than = 1;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtAuth { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// A token for `user` in `tenant`, valid for `ttl` from now.
    pub fn issue(&self, tenant: &str, user: &str, ttl: Duration) -> Result<String> {
        check_name("tenant", tenant).map_err(|e| Error::InvalidInput(e.into()))?;
        check_name("user", user).map_err(|e| Error::InvalidInput(e.into()))?;
        let exp = unix_now().checked_add(ttl.as_secs()).ok_or_else(|| Error::InvalidInput("ttl is too long".into()))?;
        self.sign(&Claims { sub: user.to_owned(), tenant: tenant.to_owned(), exp, scope: None, entities: None })
    }

    /// A token for `user` in `tenant`, valid for `ttl`, narrowed to `scope` (space separated
    /// words, e.g. `sync:read`) and `entities`, where given.
    pub fn issue_scoped(
        &self,
        tenant: &str,
        user: &str,
        ttl: Duration,
        scope: Option<&str>,
        entities: Option<&[String]>,
    ) -> Result<String> {
        check_name("tenant", tenant).map_err(|e| Error::InvalidInput(e.into()))?;
        check_name("user", user).map_err(|e| Error::InvalidInput(e.into()))?;
        if let Some(words) = scope {
            if words.split_whitespace().next().is_none() {
                return Err(Error::InvalidInput(format!("an empty scope: give {SCOPE_READ} and/or {SCOPE_WRITE}")));
            }
            for w in words.split_whitespace() {
                if w != SCOPE_READ && w != SCOPE_WRITE {
                    return Err(Error::InvalidInput(format!(
                        "unknown scope {w:?}: use {SCOPE_READ} and/or {SCOPE_WRITE}"
                    )));
                }
            }
        }
        if let Some(entities) = entities {
            for e in entities {
                converge_core::model::validate_entity(e).map_err(|e| Error::InvalidInput(e.to_string()))?;
            }
        }
        let exp = unix_now().checked_add(ttl.as_secs()).ok_or_else(|| Error::InvalidInput("ttl is too long".into()))?;
        self.sign(&Claims {
            sub: user.to_owned(),
            tenant: tenant.to_owned(),
            exp,
            scope: scope.map(str::to_owned),
            entities: entities.map(<[String]>::to_vec),
        })
    }

    /// Signs arbitrary claims (also expired ones: tests and tools need those).
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)?)
    }

    /// The verified claims of a token.
    pub fn verify(&self, token: &str) -> std::result::Result<Claims, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::new(Code::TokenExpired, "the token has expired"),
                _ => unauthorized(),
            })?;
        let claims = data.claims;
        if check_name("tenant", &claims.tenant).is_err() || check_name("user", &claims.sub).is_err() {
            return Err(unauthorized());
        }
        Ok(claims)
    }
}

impl Authenticator for JwtAuth {
    fn authenticate(&self, bearer: &str) -> std::result::Result<Scope, ApiError> {
        let claims = self.verify(bearer)?;
        let access = claims.access();
        Ok(Scope { tenant: claims.tenant, user: claims.sub, access })
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(Code::Unauthorized, "missing or invalid bearer token")
}

/// A tenant or user name: 1-255 bytes, no control characters.
fn check_name(what: &'static str, name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(match what {
            "tenant" => "a tenant is 1-255 bytes without control characters",
            _ => "a user is 1-255 bytes without control characters",
        });
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(auth: &JwtAuth, token: &str) -> Code {
        auth.authenticate(token).unwrap_err().code
    }

    #[test]
    fn issued_tokens_authenticate_to_their_scope() {
        let auth = JwtAuth::new(b"secret");
        let token = auth.issue("acme", "alice", Duration::from_secs(3600)).unwrap();
        let scope = auth.authenticate(&token).unwrap();
        assert_eq!(scope, Scope::new("acme", "alice"));
        let claims = auth.verify(&token).unwrap();
        let now = unix_now();
        assert!(claims.exp >= now + 3599 && claims.exp <= now + 3601, "{}", claims.exp);
    }

    #[test]
    fn an_expired_token_is_token_expired_with_zero_leeway() {
        let auth = JwtAuth::new(b"secret");
        let claims =
            Claims { sub: "alice".into(), tenant: "acme".into(), exp: unix_now() - 2, scope: None, entities: None };
        let token = auth.sign(&claims).unwrap();
        assert_eq!(code(&auth, &token), Code::TokenExpired);
    }

    #[test]
    fn a_token_is_expired_from_the_second_of_its_exp() {
        let auth = JwtAuth::new(b"secret");
        let token = auth.issue("acme", "alice", Duration::ZERO).unwrap();
        assert_eq!(code(&auth, &token), Code::TokenExpired);
    }

    #[test]
    fn bad_tokens_are_unauthorized() {
        let auth = JwtAuth::new(b"secret");
        let other = JwtAuth::new(b"another secret");
        let exp = unix_now() + 600;
        // Garbage, and an empty token.
        assert_eq!(code(&auth, "not.a.token"), Code::Unauthorized);
        assert_eq!(code(&auth, ""), Code::Unauthorized);
        // Wrong signature, also when it has expired: the signature is checked first.
        let foreign = other.issue("acme", "alice", Duration::from_secs(600)).unwrap();
        assert_eq!(code(&auth, &foreign), Code::Unauthorized);
        let foreign_expired = other
            .sign(&Claims { sub: "a".into(), tenant: "t".into(), exp: exp - 1200, scope: None, entities: None })
            .unwrap();
        assert_eq!(code(&auth, &foreign_expired), Code::Unauthorized);
        // A tampered payload.
        let good = auth.issue("acme", "alice", Duration::from_secs(600)).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let forged = other.issue("evil", "alice", Duration::from_secs(600)).unwrap();
        parts[1] = forged.split('.').nth(1).unwrap().to_owned();
        assert_eq!(code(&auth, &parts.join(".")), Code::Unauthorized);
        // Empty tenant or user.
        let empty_tenant =
            auth.sign(&Claims { sub: "a".into(), tenant: String::new(), exp, scope: None, entities: None }).unwrap();
        assert_eq!(code(&auth, &empty_tenant), Code::Unauthorized);
        let empty_user =
            auth.sign(&Claims { sub: String::new(), tenant: "t".into(), exp, scope: None, entities: None }).unwrap();
        assert_eq!(code(&auth, &empty_user), Code::Unauthorized);
    }

    #[test]
    fn tokens_missing_claims_are_unauthorized() {
        #[derive(Serialize)]
        struct NoTenant {
            sub: String,
            exp: u64,
        }
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
            tenant: String,
        }
        let auth = JwtAuth::new(b"secret");
        let key = EncodingKey::from_secret(b"secret");
        let header = Header::new(Algorithm::HS256);
        let exp = unix_now() + 600;
        let t = jsonwebtoken::encode(&header, &NoTenant { sub: "a".into(), exp }, &key).unwrap();
        assert_eq!(code(&auth, &t), Code::Unauthorized);
        let t = jsonwebtoken::encode(&header, &NoExp { sub: "a".into(), tenant: "t".into() }, &key).unwrap();
        assert_eq!(code(&auth, &t), Code::Unauthorized);
        // Another algorithm with the same secret.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims { sub: "a".into(), tenant: "t".into(), exp, scope: None, entities: None },
            &key,
        )
        .unwrap();
        assert_eq!(code(&auth, &hs512), Code::Unauthorized);
    }

    #[test]
    fn issue_refuses_empty_names() {
        let auth = JwtAuth::new(b"secret");
        assert!(matches!(auth.issue("", "u", Duration::from_secs(1)), Err(Error::InvalidInput(_))));
        assert!(matches!(auth.issue("t", "", Duration::from_secs(1)), Err(Error::InvalidInput(_))));
        assert!(matches!(auth.issue("t", "u", Duration::MAX), Err(Error::InvalidInput(_))));
    }
}
