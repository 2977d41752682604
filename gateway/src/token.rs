//! API bearer tokens. Tokens are random secrets shown once; the server stores only their SHA-256
//! (a fast hash is right for 256-bit random secrets: there is nothing to brute-force).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of generated tokens, so they are recognisable in logs and secret scanners.
pub const TOKEN_PREFIX: &str = "wg_";
/// Shortest token accepted from an admin token file.
pub const MIN_TOKEN_LEN: usize = 24;

/// What a token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Open sessions to targets.
    User,
    /// Everything a user can, plus approve or deny session requests.
    Approver,
    /// Everything: targets, tokens, any session, drain.
    Admin,
}

impl Role {
    /// Stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Role::User),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// True when this role includes `other` (admin ⊇ approver ⊇ user).
    pub fn allows(self, other: Role) -> bool {
        self >= other
    }
}

/// A new random token: `wg_` + 43 characters of base64url (256 bits).
pub fn generate() -> String {
    let secret: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// The stored form of a token: hex SHA-256.
pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.trim().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an admin token file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// Empty file.
    #[error("the file is empty")]
    Empty,
    /// Too short to be a secret.
    #[error("the token is {0} characters; at least {MIN_TOKEN_LEN} required")]
    TooShort(usize),
    /// Whitespace inside: probably two tokens or a formatting accident.
    #[error("the token contains whitespace")]
    Whitespace,
}

/// Validates the content of an admin token file and returns the token.
pub fn parse_token_file(text: &str) -> Result<String, TokenFileError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(TokenFileError::Empty);
    }
    if t.chars().any(char::is_whitespace) {
        return Err(TokenFileError::Whitespace);
    }
    if t.len() < MIN_TOKEN_LEN {
        return Err(TokenFileError::TooShort(t.len()));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_unique_prefixed_and_long() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 46, "{a}");
    }

    #[test]
    fn hash_is_stable_hex_and_ignores_surrounding_whitespace() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash("abc\n"), hash("abc"));
        assert_ne!(hash("abc"), hash("abd"));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Approver));
        assert!(Role::Approver.allows(Role::User));
        assert!(!Role::User.allows(Role::Approver));
        for r in [Role::User, Role::Approver, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn token_file_validation() {
        assert_eq!(parse_token_file(" \n"), Err(TokenFileError::Empty));
        assert_eq!(parse_token_file("short"), Err(TokenFileError::TooShort(5)));
        assert_eq!(
            parse_token_file("aaaaaaaaaaaa bbbbbbbbbbbbbbb"),
            Err(TokenFileError::Whitespace)
        );
        let t = generate();
        assert_eq!(parse_token_file(&format!("{t}\n")), Ok(t));
    }
}
