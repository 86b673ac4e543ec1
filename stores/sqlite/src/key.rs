//! Encryption at rest: the store's key (SQLCipher, feature `encryption`), applied to every
//! connection before its first read, and telling an encrypted file from a damaged one.

use std::path::Path;

use rusqlite::Connection;

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

/// Applies `key` to a fresh connection and checks it opens the file.
pub(crate) fn apply(conn: &Connection, key: &Key) -> Result<()> {
    if !ENCRYPTION {
        return Err(Error::BadKey(
            "this build cannot encrypt: converge-sqlite was built without its `encryption` feature".into(),
        ));
    }
    conn.pragma_update(None, "key", key.pragma_value())?;
    // The first read decrypts page 1: a wrong key fails here, before anything is written.
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(()),
        Err(e) if is_not_a_database(&e) => Err(Error::WrongKey),
        Err(e) => Err(e.into()),
    }
}

/// Checks `key` opens the existing file at `path` through a read-only connection, which never
/// writes to the file (not even a checkpoint when it closes). A new file passes.
pub(crate) fn probe(path: &Path, key: &Key) -> Result<()> {
    if std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true) {
        return Ok(());
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // Any other failure (a WAL without its index, say) is left to the normal open to report.
    match Connection::open_with_flags(path, flags).map_err(Error::from).and_then(|conn| apply(&conn, key)) {
        Err(Error::WrongKey) => Err(Error::WrongKey),
        Err(Error::BadKey(why)) => Err(Error::BadKey(why)),
        _ => Ok(()),
    }
}

fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase)
}

/// Whether the file at `path` looks encrypted rather than damaged: no SQLite header, and its
/// first page as varied as random bytes (an encrypted page is; a damaged or foreign file
/// almost never is). Such a file is never moved aside: without its key it is not ours to judge.
pub(crate) fn looks_encrypted(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    if bytes.len() < 1024 || bytes.starts_with(b"SQLite format 3\0") {
        return false;
    }
    let page = &bytes[..bytes.len().min(4096)];
    let mut seen = [false; 256];
    for &b in page {
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
