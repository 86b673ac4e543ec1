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
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtAuth { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// A token for `user` in `tenant`, valid for `ttl` from now.
    pub fn issue(&self, tenant: &str, user: &str, ttl: Duration) -> Result<String> {
        check_name("tenant", tenant).map_err(|e| Error::InvalidInput(e.into()))?;
        check_name("user", user).map_err(|e| Error::InvalidInput(e.into()))?;
        let exp = unix_now().checked_add(ttl.as_secs()).ok_or_else(|| Error::InvalidInput("ttl is too long".into()))?;
        self.sign(&Claims { sub: user.to_owned(), tenant: tenant.to_owned(), exp })
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
        Ok(Scope { tenant: claims.tenant, user: claims.sub })
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
        assert_eq!(scope, Scope { tenant: "acme".into(), user: "alice".into() });
        let claims = auth.verify(&token).unwrap();
        let now = unix_now();
        assert!(claims.exp >= now + 3599 && claims.exp <= now + 3601, "{}", claims.exp);
    }

    #[test]
    fn an_expired_token_is_token_expired_with_zero_leeway() {
        let auth = JwtAuth::new(b"secret");
        let claims = Claims { sub: "alice".into(), tenant: "acme".into(), exp: unix_now() - 2 };
        let token = auth.sign(&claims).unwrap();
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
        let foreign_expired = other.sign(&Claims { sub: "a".into(), tenant: "t".into(), exp: exp - 1200 }).unwrap();
        assert_eq!(code(&auth, &foreign_expired), Code::Unauthorized);
        // A tampered payload.
        let good = auth.issue("acme", "alice", Duration::from_secs(600)).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let forged = other.issue("evil", "alice", Duration::from_secs(600)).unwrap();
        parts[1] = forged.split('.').nth(1).unwrap().to_owned();
        assert_eq!(code(&auth, &parts.join(".")), Code::Unauthorized);
        // Empty tenant or user.
        let empty_tenant = auth.sign(&Claims { sub: "a".into(), tenant: String::new(), exp }).unwrap();
        assert_eq!(code(&auth, &empty_tenant), Code::Unauthorized);
        let empty_user = auth.sign(&Claims { sub: String::new(), tenant: "t".into(), exp }).unwrap();
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
            &Claims { sub: "a".into(), tenant: "t".into(), exp },
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
