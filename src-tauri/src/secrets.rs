//! Where the desktop app keeps the password: the OS keyring (Secret Service on Linux). When no
//! keyring is available the user is asked before the password goes anywhere else; the fallback is
//! the core's owner-only database. The FAST token (the server's login token, XEP-0484) follows
//! the password: in the keyring when the password is ([`KeyringVault`]), else in the database.

/// The keyring service name.
const SERVICE: &str = "org.tether.desktop";

use tether_core::contract::{CommandError, CommandErrorKind};

/// Where a password ended up.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// In the OS keyring; the database holds no password.
    Keyring,
    /// The user agreed to keep it in the database (no keyring available).
    Database,
}

/// Stores `password` for `jid` in the keyring. Without a keyring: `Ok(Database)` if the user
/// already agreed (`allow_database`), else a [`CommandErrorKind::NoKeyring`] error that says why
/// (the UI then asks).
pub fn store(jid: &str, password: &str, allow_database: bool) -> Result<Stored, CommandError> {
    let saved = keyring::Entry::new(SERVICE, jid).and_then(|e| e.set_password(password));
    match saved {
        Ok(()) => Ok(Stored::Keyring),
        Err(_) if allow_database => Ok(Stored::Database),
        Err(e) => Err(CommandError::new(
            CommandErrorKind::NoKeyring,
            e.to_string(),
        )),
    }
}

/// The password kept in the keyring for `jid`.
pub fn load(jid: &str) -> Result<String, String> {
    keyring::Entry::new(SERVICE, jid)
        .and_then(|e| e.get_password())
        .map_err(|e| format!("cannot read the password from the keyring: {e}"))
}

/// Forgets what the keyring keeps for `jid` (its password and token): the account was removed.
pub fn forget(jid: &str) {
    for user in [jid.to_owned(), format!("{jid}#fast")] {
        match keyring::Entry::new(SERVICE, &user).and_then(|e| e.delete_credential()) {
            Ok(()) | Err(keyring::Error::NoEntry) => {}
            Err(e) => tracing::warn!("the keyring keeps {user}'s secret still: {e}"),
        }
    }
}

/// The FAST token's secret in the keyring, beside the password (entry `JID#fast`).
pub struct KeyringVault {
    user: String,
}

impl KeyringVault {
    /// The vault for `jid`'s token.
    pub fn new(jid: &str) -> KeyringVault {
        KeyringVault {
            user: format!("{jid}#fast"),
        }
    }
}

impl tether_core::auth::SecretVault for KeyringVault {
    fn fast_secret(&self) -> Result<Option<String>, String> {
        match keyring::Entry::new(SERVICE, &self.user).and_then(|e| e.get_password()) {
            Ok(secret) => Ok(Some(secret)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(format!("cannot read the login token from the keyring: {e}")),
        }
    }

    fn set_fast_secret(&self, secret: Option<&str>) -> Result<(), String> {
        let entry = keyring::Entry::new(SERVICE, &self.user).map_err(|e| e.to_string())?;
        match secret {
            Some(s) => entry.set_password(s).map_err(|e| e.to_string()),
            None => match entry.delete_credential() {
                Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keyring's default credential store is process-wide: tests that swap it take turns.
    static KEYRING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn keyring_first_and_the_database_only_with_consent() {
        let _turn = KEYRING.lock().unwrap_or_else(|p| p.into_inner());
        // A keyring that works: the password goes there.
        keyring::set_default_credential_builder(keyring::mock::default_credential_builder());
        assert_eq!(
            store("alice@localhost", "s3cret", false),
            Ok(Stored::Keyring)
        );
        // (The mock keeps nothing between entries, so read-back is not checked here.)

        // No keyring at all: refused until the user agrees, then the database.
        keyring::set_default_credential_builder(Box::new(NoKeyring));
        let err = store("alice@localhost", "s3cret", false).unwrap_err();
        assert_eq!(err.kind, CommandErrorKind::NoKeyring, "{err}");
        assert!(
            !err.message.contains("s3cret"),
            "the password leaked into an error: {err}"
        );
        assert_eq!(
            store("alice@localhost", "s3cret", true),
            Ok(Stored::Database)
        );
        assert!(load("alice@localhost").is_err());
    }

    #[test]
    fn the_fast_token_follows_the_password_into_the_keyring() {
        use tether_core::auth::SecretVault;
        let _turn = KEYRING.lock().unwrap_or_else(|p| p.into_inner());
        // Without a keyring the vault says so (the core then keeps using the password).
        keyring::set_default_credential_builder(Box::new(NoKeyring));
        let vault = KeyringVault::new("alice@localhost");
        assert!(vault.set_fast_secret(Some("secret-token:1")).is_err());
        assert!(vault.fast_secret().is_err());
        // With one, writes go to the entry beside the password's.
        keyring::set_default_credential_builder(keyring::mock::default_credential_builder());
        assert_eq!(vault.set_fast_secret(Some("secret-token:1")), Ok(()));
        assert_eq!(vault.set_fast_secret(None), Ok(()));
    }

    /// A credential store that is never available (like a machine without Secret Service).
    struct NoKeyring;

    impl keyring::credential::CredentialBuilderApi for NoKeyring {
        fn build(
            &self,
            _target: Option<&str>,
            _service: &str,
            _user: &str,
        ) -> keyring::Result<Box<keyring::credential::Credential>> {
            Err(keyring::Error::NoStorageAccess(Box::new(
                std::io::Error::other("no Secret Service on this bus"),
            )))
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
