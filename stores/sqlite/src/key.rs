//! Encryption at rest: the store's key (SQLCipher, feature `encryption`), applied to every
//! connection before its first read, and telling an encrypted file from a damaged one.

use std::path::Path;

use std::io::Read as _;

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use crate::error::{Error, Result};

/// The key of an encrypted store: a passphrase (SQLCipher derives the key from it with PBKDF2),
/// or 32 raw bytes (no derivation: opens faster; keep them in the Keychain).
#[derive(Clone, PartialEq, Eq)]
pub enum Key {
    /// A passphrase.
    Passphrase(String),
    /// A raw 256-bit key.
    Raw([u8; 32]),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::Passphrase(_) => "Key::Passphrase(..)",
            Key::Raw(_) => "Key::Raw(..)",
        })
    }
}

impl Key {
    /// A key from its text, as the CLI and apps hand it over: exactly 64 hex digits are a raw
    /// key, anything else non-empty a passphrase. One trailing newline (`\n` or `\r\n`) is
    /// trimmed, so the contents of a key file work as they are.
    pub fn parse(text: &str) -> Result<Key> {
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
        if text.is_empty() {
            return Err(Error::BadKey("the key is empty".into()));
        }
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut raw = [0u8; 32];
            for (i, byte) in raw.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| Error::BadKey("bad hex".into()))?;
            }
            return Ok(Key::Raw(raw));
        }
        Ok(Key::Passphrase(text.to_owned()))
    }

    /// The value of `PRAGMA key` for this key.
    pub(crate) fn pragma_value(&self) -> String {
        match self {
            Key::Passphrase(p) => p.clone(),
            Key::Raw(raw) => format!("x'{}'", raw.iter().map(|b| format!("{b:02X}")).collect::<String>()),
        }
    }
}

/// Whether this build can encrypt (converge-sqlite's `encryption` feature: SQLCipher).
pub const ENCRYPTION: bool = cfg!(feature = "encryption");

/// Applies `key` to a fresh connection and checks it opens the file. A connection the key does
/// not open is closed without folding the WAL into the file: a file that is not ours to read is
/// left exactly as it is.
pub(crate) fn apply(conn: &Connection, key: &Key) -> Result<()> {
    if !ENCRYPTION {
        return Err(Error::BadKey(
            "this build cannot encrypt: converge-sqlite was built without its `encryption` feature".into(),
        ));
    }
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    conn.pragma_update(None, "key", key.pragma_value())?;
    // The first read decrypts page 1: a wrong key fails here, before anything is written.
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => {
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)?;
            Ok(())
        }
        Err(e) if is_not_a_database(&e) => Err(Error::WrongKey),
        Err(e) => Err(e.into()),
    }
}

fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase)
}

/// Whether the file at `path` looks encrypted rather than damaged: no SQLite header, and its
/// first page as varied as random bytes (an encrypted page is; a damaged or foreign file
/// almost never is). Such a file is never moved aside: without its key it is not ours to judge.
pub(crate) fn looks_encrypted(path: &Path) -> bool {
    let mut page = Vec::with_capacity(4096);
    let Ok(file) = std::fs::File::open(path) else { return false };
    if file.take(4096).read_to_end(&mut page).is_err() || page.len() < 1024 || page.starts_with(b"SQLite format 3\0") {
        return false;
    }
    let mut seen = [false; 256];
    for &b in &page {
        seen[usize::from(b)] = true;
    }
    // 1,024 random bytes show about 250 distinct values; text or zeroed pages far fewer.
    seen.iter().filter(|s| **s).count() >= 200
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_raw_hex_or_passphrase_and_never_show_in_debug() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let Key::Raw(raw) = Key::parse(&format!("{hex}\n")).unwrap() else { panic!("64 hex digits are raw") };
        assert_eq!(raw[1], 0x11);
        assert_eq!(raw[31], 0xff);
        assert_eq!(Key::parse("correct horse\r\n").unwrap(), Key::Passphrase("correct horse".into()));
        assert_eq!(Key::parse(&hex[..63]).unwrap(), Key::Passphrase(hex[..63].into()));
        assert!(matches!(Key::parse("\n"), Err(Error::BadKey(_))));
        assert!(!format!("{:?}", Key::parse("secret").unwrap()).contains("secret"));
        assert!(Key::parse(hex).unwrap().pragma_value().starts_with("x'0011"));
    }
}
