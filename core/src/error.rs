//! The client's error type, with the classes the CLI maps to exit codes.

use crate::events::ErrorKind;
use crate::store::StoreError;

/// Why the client stopped or could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or configuration (a malformed JID, a missing CA file, ...).
    #[error("{0}")]
    Usage(String),
    /// The server rejected the credentials. Final: never retried.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// TLS could not be established or the certificate is not trusted. Final: never retried.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The network failed (connection refused, dropped, timed out). Retried with backoff.
    #[error("network error: {0}")]
    Network(String),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A deadline the caller set passed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Tether itself failed (a background thread panicked): a bug, never the user's doing.
    #[error("internal error: {0}")]
    Internal(String),
    /// One of the errors above with the error that caused it, kept as its
    /// [`std::error::Error::source`] (an I/O or TLS error from the socket). It says, classes
    /// and exits exactly as the error it wraps ([`Error::root`]).
    #[error("{error}")]
    Caused {
        /// What failed, as the other variants say it.
        error: Box<Error>,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// A result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// This error, keeping `source` as its cause.
    pub fn caused_by(self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::Caused {
            error: Box::new(self),
            source: source.into(),
        }
    }

    /// The error itself, without the cause [`Error::Caused`] wraps it with.
    pub fn root(&self) -> &Error {
        match self {
            Error::Caused { error, .. } => error.root(),
            other => other,
        }
    }

    /// The CLI's exit code for this error class (documented in the README), from its
    /// [`Error::kind`]: the one classification.
    pub fn exit_code(&self) -> i32 {
        match self.kind() {
            ErrorKind::Usage => 2,
            ErrorKind::Auth => 3,
            ErrorKind::Network | ErrorKind::Timeout => 4,
            ErrorKind::Database => 5,
            ErrorKind::Tls => 6,
            ErrorKind::Protocol => 7,
            // The kinds only events have; an `Error` is never one of them.
            ErrorKind::Internal
            | ErrorKind::Stanza
            | ErrorKind::Security
            | ErrorKind::Mam
            | ErrorKind::Roster
            | ErrorKind::Presence => 1,
        }
    }

    /// The kind of error, for events and front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_)
            | Error::Store(
                StoreError::Refused(_)
                | StoreError::WhichAccount(_)
                | StoreError::UnknownAccount(_)
                | StoreError::AccountExists(_),
            ) => ErrorKind::Usage,
            Error::Auth(_) => ErrorKind::Auth,
            Error::Tls(_) => ErrorKind::Tls,
            Error::Network(_) => ErrorKind::Network,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Store(_) => ErrorKind::Database,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Caused { error, .. } => error.kind(),
        }
    }

    /// Whether reconnecting could help. Credentials, certificates and a damaged store won't fix
    /// themselves, so those stop the client and surface to the user. A store that is full,
    /// read-only or locked by another process may be fixed while the client runs: the session
    /// is dropped (whatever could not be committed was not acked, so the server keeps it) and
    /// retried with backoff.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Network(_) | Error::Protocol(_) => true,
            Error::Store(e) => e.is_transient(),
            Error::Caused { error, .. } => error.is_retryable(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_caused_error_says_classes_and_exits_as_its_root_and_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = Error::Network("the link broke".into()).caused_by(io);
        assert_eq!(e.to_string(), "network error: the link broke");
        assert_eq!(e.kind(), ErrorKind::Network);
        assert_eq!(e.exit_code(), 4);
        assert!(e.is_retryable());
        assert!(matches!(e.root(), Error::Network(_)));
        let source = e.source().expect("the cause is kept");
        assert_eq!(source.to_string(), "reset by peer");
        let tls = Error::Tls("bad certificate".into()).caused_by("unknown issuer");
        assert_eq!(
            (tls.kind(), tls.exit_code(), tls.is_retryable()),
            (ErrorKind::Tls, 6, false)
        );
    }
}
