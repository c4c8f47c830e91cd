//! Account creation against a real Prosody (issue 16, item 2): in-band registration (XEP-0077)
//! where the server allows it, and invitation links (XEP-0401, Prosody's `mod_invites`) where it
//! takes only invited people. Each refusal is a clear error (a taken name, a password the
//! server's policy refuses, registration closed, an invitation expired, used, or for another
//! server), and nothing is stored for an account the server did not create. A created account is
//! checked by a third-party client (slixmpp) logging in with it.

use std::time::Duration;

use tether_e2e::prosody::RegistrationOptions;
use tether_e2e::slix_peer::SlixPeer;
use tether_e2e::tether::{Node, Output, Running};
use tether_e2e::{Prosody, ProsodyOptions};

const LONG: Duration = Duration::from_secs(60);

fn server(invite_only: bool) -> Prosody {
    Prosody::start(ProsodyOptions {
        registration: Some(RegistrationOptions {
            invite_only,
            min_password: 10,
        }),
        ..ProsodyOptions::default()
    })
    .expect("start prosody")
}

/// A store in `dir` where accounts are registered (it has none at first).
struct Store {
    node: Node,
    prosody_addr: String,
    ca: String,
}

impl Store {
    fn new(dir: &std::path::Path, prosody: &Prosody) -> Store {
        Store {
            node: Node {
                db: dir.join("store.db"),
                jid: String::new(),
                select: false,
                wrapper: Vec::new(),
            },
            prosody_addr: prosody.addr().to_string(),
            ca: prosody.ca_file().to_string_lossy().into_owned(),
        }
    }

    fn register(&self, jid: &str, password: &str, invite: Option<&str>) -> Output {
        let mut c = self.node.store_cmd();
        c.args(["account", "register", "--jid", jid, "--password-env", "PW"])
            .args(["--server", &self.prosody_addr, "--ca-file", &self.ca])
            .env("PW", password);
        if let Some(link) = invite {
            c.args(["--invite", link]);
        }
        Node::output(c)
    }

    fn accounts(&self) -> Vec<String> {
        self.node.account_jids()
    }
}

fn refused(out: &Output, words: &str) {
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(words),
        "wanted {words:?}: {}",
        out.stderr
    );
}

/// The account exists on the server: a third-party client logs in with it.
fn logs_in(prosody: &Prosody, jid: &str, password: &str) {
    SlixPeer::start(prosody.addr(), jid, password, &prosody.ca_file())
        .unwrap_or_else(|e| panic!("{jid} cannot log in: {e}"));
}

#[test]
fn open_registration_creates_the_account_and_refuses_a_weak_password_and_a_taken_name() {
    let prosody = server(false);
    prosody.register("alice", "alice-secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), &prosody);

    refused(
        &store.register("newbie@localhost", "short", None),
        "the server refused to create this account: Password is too short (minimum 10 characters)",
    );
    assert!(
        store.accounts().is_empty(),
        "nothing stored for a refused account"
    );
    refused(
        &store.register("alice@localhost", "long enough password", None),
        "is taken",
    );
    assert!(store.accounts().is_empty());

    let out = store.register("newbie@localhost", "a long enough password", None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("account:registered"), "{}", out.stdout);
    assert_eq!(store.accounts(), ["newbie@localhost"]);
    logs_in(&prosody, "newbie@localhost", "a long enough password");
    // And Tether signs in with it at once.
    let mut run = Running::spawn({
        let mut c = store.node.store_cmd();
        c.args(["run", "--until-idle"]);
        c
    });
    run.finish(LONG, "the new account's first run");
    assert!(run.saw_online(false), "{}", run.diagnostics());
    // The same name again, from this store: refused before asking the server.
    refused(
        &store.register("newbie@localhost", "a long enough password", None),
        "already an account here",
    );
}

#[test]
fn invitation_only_registration_takes_a_valid_invitation_once_and_refuses_the_rest() {
    let prosody = server(true);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), &prosody);

    refused(
        &store.register("nobody@localhost", "a long enough password", None),
        "the server refused to create this account: Registration on this server is through invitation only",
    );
    refused(
        &store.register(
            "someone@localhost",
            "a long enough password",
            Some("xmpp:elsewhere.example?register;preauth=abc"),
        ),
        "this invitation is for elsewhere.example, not for localhost",
    );
    refused(
        &store.register(
            "someone@localhost",
            "a long enough password",
            Some("https://localhost/invite"),
        ),
        "not an invitation link",
    );
    let expired = prosody.create_invite(1).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    refused(
        &store.register("late@localhost", "a long enough password", Some(&expired)),
        "the invitation is not valid any more",
    );
    assert!(store.accounts().is_empty());

    let invite = prosody.create_invite(3600).unwrap();
    assert!(invite.starts_with("xmpp:localhost?register"), "{invite}");
    let out = store.register("invited@localhost", "a long enough password", Some(&invite));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(store.accounts(), ["invited@localhost"]);
    logs_in(&prosody, "invited@localhost", "a long enough password");
    // The invitation is used up.
    refused(
        &store.register("second@localhost", "a long enough password", Some(&invite)),
        "the invitation is not valid any more",
    );
    assert_eq!(store.accounts(), ["invited@localhost"]);
}

#[test]
fn a_server_without_registration_says_so() {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("start prosody");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), &prosody);
    refused(
        &store.register("newbie@localhost", "a long enough password", None),
        "this server does not allow creating an account here",
    );
    assert!(store.accounts().is_empty());
}
