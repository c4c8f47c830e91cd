//! The world most end-to-end scenarios start from: one server, two users on it, alice (the
//! sender) connecting through the fault proxy and bob (the receiver) connecting directly, each a
//! `tether` database in one temporary directory. Passwords are `USER-secret`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::ejabberd::Ejabberd;
use crate::prosody::Prosody;
use crate::proxy::Proxy;
use crate::tether::Node;

/// What [`Pair`] needs of a test server.
pub trait TestServer {
    /// Where clients connect.
    fn addr(&self) -> SocketAddr;
    /// The test CA that signed its certificate.
    fn ca_file(&self) -> PathBuf;
    /// Creates an account.
    fn register(&self, user: &str, password: &str) -> io::Result<()>;
}

impl TestServer for Prosody {
    fn addr(&self) -> SocketAddr {
        Prosody::addr(self)
    }
    fn ca_file(&self) -> PathBuf {
        Prosody::ca_file(self)
    }
    fn register(&self, user: &str, password: &str) -> io::Result<()> {
        Prosody::register(self, user, password)
    }
}

impl TestServer for Ejabberd {
    fn addr(&self) -> SocketAddr {
        Ejabberd::addr(self)
    }
    fn ca_file(&self) -> PathBuf {
        Ejabberd::ca_file(self)
    }
    fn register(&self, user: &str, password: &str) -> io::Result<()> {
        Ejabberd::register(self, user, password)
    }
}

/// Alice (through [`Pair::proxy`]) and bob (direct) on `server`.
pub struct Pair<S> {
    /// The server.
    pub server: S,
    /// The fault proxy in front of the server, on alice's path only.
    pub proxy: Proxy,
    /// The sender, `alice@localhost`.
    pub alice: Node,
    /// The receiver, `bob@localhost`.
    pub bob: Node,
    _dir: tempfile::TempDir,
}

impl<S: TestServer> Pair<S> {
    /// Registers alice and bob on `server` and creates their databases.
    pub fn new(server: S) -> Pair<S> {
        for user in ["alice", "bob"] {
            server
                .register(user, &format!("{user}-secret"))
                .expect("register");
        }
        let proxy = Proxy::start(server.addr());
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = server.ca_file();
        let alice = Node::new(dir.path(), "alice", "alice-secret", proxy.addr(), &ca);
        let bob = Node::new(dir.path(), "bob", "bob-secret", server.addr(), &ca);
        Pair {
            server,
            proxy,
            alice,
            bob,
            _dir: dir,
        }
    }
}
