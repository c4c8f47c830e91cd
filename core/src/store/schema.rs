//! Versioned migrations. `PRAGMA user_version` is the schema version; `PRAGMA application_id` marks
//! the file as Tether's. Migrations only ever append to [`MIGRATIONS`].

use rusqlite::Connection;
use std::path::Path;

use super::{Result, StoreError};

/// `PRAGMA application_id` of a Tether database ("TthR").
pub const APPLICATION_ID: i64 = 0x5474_6852;

/// Each entry migrates from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // v1: accounts, messages with a delivery state, the SM state.
    r#"
    CREATE TABLE accounts (
        id               INTEGER PRIMARY KEY,
        jid              TEXT NOT NULL UNIQUE,
        password         TEXT NOT NULL,
        server           TEXT,
        ca_file          TEXT,
        insecure_plaintext INTEGER NOT NULL DEFAULT 0,
        resource         TEXT NOT NULL,
        created_at       INTEGER NOT NULL
    );

    CREATE TABLE messages (
        seq_local        INTEGER PRIMARY KEY,          -- local order of commit
        id               TEXT NOT NULL,                -- stanza id
        origin_id        TEXT,                         -- XEP-0359 origin-id
        stanza_id        TEXT,                         -- XEP-0359 stanza-id stamped by our server
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        peer             TEXT NOT NULL,                -- bare JID of the other side
        direction        TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        body             TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'hibernated', 'retrying',
                             'acked', 'reflected', 'delivered', 'displayed', 'failed', 'discarded',
                             'received')),
        sm_seq           INTEGER,                      -- outbound SM sequence while unacked
        error            TEXT,
        attempts         INTEGER NOT NULL DEFAULT 0,   -- times written to a stream
        created_at       INTEGER NOT NULL,             -- ms since epoch: committed locally
        updated_at       INTEGER NOT NULL,             -- ms: last state change
        sent_at          INTEGER,                      -- ms: last written to a stream
        acked_at         INTEGER,                      -- ms: covered by the server's h
        server_ts        INTEGER                       -- ms: the sender's/server's timestamp (inbound)
    );
    CREATE UNIQUE INDEX messages_out_id ON messages (account_id, id) WHERE direction = 'out';
    CREATE INDEX messages_in_origin ON messages (account_id, peer, origin_id) WHERE direction = 'in';
    CREATE UNIQUE INDEX messages_stanza_id ON messages (account_id, stanza_id) WHERE stanza_id IS NOT NULL;
    CREATE INDEX messages_pending ON messages (account_id, state, seq_local)
        WHERE state IN ('queued', 'sent', 'hibernated', 'retrying');
    CREATE INDEX messages_peer ON messages (account_id, peer, seq_local);

    CREATE TABLE sm_state (
        account_id       INTEGER PRIMARY KEY REFERENCES accounts(id),
        stream_id        TEXT,
        resumable        INTEGER NOT NULL DEFAULT 0,
        location         TEXT,
        max              INTEGER,
        inbound_h        INTEGER NOT NULL DEFAULT 0,
        outbound_count   INTEGER NOT NULL DEFAULT 0,
        acked_h          INTEGER NOT NULL DEFAULT 0,
        updated_at       INTEGER NOT NULL
    );
    "#,
    // v2: beyond the server's ack: receipts/markers/presence as a control outbox, rooms, roster,
    // subscription requests, archive sync state; message kind and other-device flag.
    r#"
    ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'chat'
        CHECK (kind IN ('chat', 'groupchat'));
    ALTER TABLE messages ADD COLUMN other_device INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN from_nick TEXT;
    ALTER TABLE accounts ADD COLUMN roster_ver TEXT;

    -- Stanzas that carry no user text but must not be lost either (receipts, markers, presence
    -- answers, room joins): written and SM-tracked like messages, deleted once acked, and simply
    -- re-sent after a failed resumption (they are idempotent).
    CREATE TABLE control (
        seq_local        INTEGER PRIMARY KEY,
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        kind             TEXT NOT NULL CHECK (kind IN ('receipt', 'displayed', 'presence',
                             'muc-join', 'muc-leave')),
        target           TEXT NOT NULL,
        ref_id           TEXT,
        payload          TEXT,
        state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'written')),
        sm_seq           INTEGER,
        created_at       INTEGER NOT NULL
    );
    CREATE INDEX control_state ON control (account_id, state, seq_local);

    CREATE TABLE rooms (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        jid              TEXT NOT NULL,
        nick             TEXT NOT NULL,
        joined           INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, jid)
    );

    CREATE TABLE roster (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        jid              TEXT NOT NULL,
        name             TEXT,
        subscription     TEXT NOT NULL DEFAULT 'none',
        ask              INTEGER NOT NULL DEFAULT 0,
        presence         TEXT NOT NULL DEFAULT 'unavailable',
        PRIMARY KEY (account_id, jid)
    );

    CREATE TABLE subscription_requests (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        jid              TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        PRIMARY KEY (account_id, jid)
    );

    CREATE TABLE mam_state (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        archive          TEXT NOT NULL,
        last_id          TEXT,
        synced_at        INTEGER,
        PRIMARY KEY (account_id, archive)
    );
    "#,
    // v3: a stanza-id is unique per conversation, not per account: one a peer forged (a server
    // that does not strip them lets it through) must not collide with another peer's.
    r#"
    DROP INDEX messages_stanza_id;
    CREATE UNIQUE INDEX messages_stanza_id
        ON messages (account_id, peer, stanza_id) WHERE stanza_id IS NOT NULL;
    "#,
    // v4: de-duplicating an inbound message, and matching a room's echo, find their rows by index
    // instead of scanning the whole conversation (the network benchmark found it: a receiver's
    // CPU per message grew with the conversation's length).
    r#"
    CREATE INDEX messages_in_id ON messages (account_id, peer, id) WHERE direction = 'in';
    CREATE INDEX messages_out_origin
        ON messages (account_id, peer, origin_id) WHERE direction = 'out';
    "#,
    // v5: the archive catch-up in progress survives a killed process (the session engine's
    // `MamSync`, as JSON): a resumed stream re-delivers the results of the query it had running.
    r#"
    CREATE TABLE mam_sync (
        account_id       INTEGER PRIMARY KEY REFERENCES accounts(id),
        state            TEXT NOT NULL
    );
    "#,
    // v6: the `checking` state (a message whose stream was lost for good is looked for in the
    // account's archive before the user is asked). A CHECK constraint cannot be altered in SQLite:
    // the table is rebuilt (SQLite's documented procedure), with the same columns and indexes.
    r#"
    CREATE TABLE messages_v6 (
        seq_local        INTEGER PRIMARY KEY,
        id               TEXT NOT NULL,
        origin_id        TEXT,
        stanza_id        TEXT,
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        peer             TEXT NOT NULL,
        direction        TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        body             TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'hibernated', 'retrying',
                             'checking', 'acked', 'reflected', 'delivered', 'displayed', 'failed',
                             'discarded', 'received')),
        sm_seq           INTEGER,
        error            TEXT,
        attempts         INTEGER NOT NULL DEFAULT 0,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        sent_at          INTEGER,
        acked_at         INTEGER,
        server_ts        INTEGER,
        kind             TEXT NOT NULL DEFAULT 'chat' CHECK (kind IN ('chat', 'groupchat')),
        other_device     INTEGER NOT NULL DEFAULT 0,
        from_nick        TEXT
    );
    INSERT INTO messages_v6 (seq_local, id, origin_id, stanza_id, account_id, peer, direction, body,
                             state, sm_seq, error, attempts, created_at, updated_at, sent_at,
                             acked_at, server_ts, kind, other_device, from_nick)
        SELECT seq_local, id, origin_id, stanza_id, account_id, peer, direction, body, state,
               sm_seq, error, attempts, created_at, updated_at, sent_at, acked_at, server_ts, kind,
               other_device, from_nick
        FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v6 RENAME TO messages;
    CREATE UNIQUE INDEX messages_out_id ON messages (account_id, id) WHERE direction = 'out';
    CREATE INDEX messages_in_origin ON messages (account_id, peer, origin_id) WHERE direction = 'in';
    CREATE UNIQUE INDEX messages_stanza_id
        ON messages (account_id, peer, stanza_id) WHERE stanza_id IS NOT NULL;
    CREATE INDEX messages_pending ON messages (account_id, state, seq_local)
        WHERE state IN ('queued', 'sent', 'hibernated', 'retrying');
    CREATE INDEX messages_peer ON messages (account_id, peer, seq_local);
    CREATE INDEX messages_in_id ON messages (account_id, peer, id) WHERE direction = 'in';
    CREATE INDEX messages_out_origin
        ON messages (account_id, peer, origin_id) WHERE direction = 'out';
    CREATE INDEX messages_checking ON messages (account_id, seq_local) WHERE state = 'checking';
    "#,
    // v7: messages that act on another one (XEP-0308 corrections, XEP-0424 retractions, XEP-0444
    // reactions) and replies (XEP-0461). `target` is the other message's id as the stanza names it
    // (the room's stanza-id in group chat); `target_key` is that message's row once it is here (an
    // action may arrive before its target: archive order is not send order, and it is linked when
    // the target comes). `payload`: a reaction's emoji (JSON), or the quote our reply carries.
    r#"
    ALTER TABLE messages ADD COLUMN action TEXT CHECK (action IN ('correct', 'retract', 'react'));
    ALTER TABLE messages ADD COLUMN target TEXT;
    ALTER TABLE messages ADD COLUMN target_key INTEGER;
    ALTER TABLE messages ADD COLUMN payload TEXT;
    CREATE INDEX messages_target ON messages (account_id, target_key) WHERE target_key IS NOT NULL;
    CREATE INDEX messages_unlinked ON messages (account_id, peer, target)
        WHERE target IS NOT NULL AND target_key IS NULL;
    "#,
    // v8: files (XEP-0363 uploads, XEP-0066 links, XEP-0446 metadata). One row per message that
    // carries a file. Ours: the blob is in the store before the message is committed, and the
    // upload is a durable job (`slot-needed` -> `uploading` -> `uploaded`, the message waits in
    // `queued` until then). Theirs: `remote` -> `downloading` -> `downloaded` (hash checked).
    r#"
    CREATE TABLE attachments (
        message_key      INTEGER PRIMARY KEY REFERENCES messages(seq_local),
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        name             TEXT NOT NULL,
        size             INTEGER,
        media_type       TEXT,
        sha256           TEXT,
        url              TEXT,
        transfer         TEXT NOT NULL CHECK (transfer IN ('slot-needed', 'uploading', 'uploaded',
                             'remote', 'downloading', 'downloaded', 'failed')),
        put_url          TEXT,
        put_headers      TEXT,
        slot_attempts    INTEGER NOT NULL DEFAULT 0,
        done_bytes       INTEGER NOT NULL DEFAULT 0,
        error            TEXT,
        updated_at       INTEGER NOT NULL
    );
    CREATE INDEX attachments_work ON attachments (account_id, transfer)
        WHERE transfer IN ('slot-needed', 'uploading', 'remote', 'downloading');
    "#,
    // v9: push notifications (XEP-0357). The app's wish, kept until the server confirmed it:
    // `enable` is told to the server on every new session (and at once when it changes);
    // `disable` until the server confirmed it, then the row goes. `state`: what the server last
    // said of the wish (`pending` until it answers).
    r#"
    CREATE TABLE push (
        account_id       INTEGER PRIMARY KEY REFERENCES accounts(id),
        service          TEXT NOT NULL,
        node             TEXT NOT NULL,
        secret           TEXT,
        want             TEXT NOT NULL CHECK (want IN ('enable', 'disable')),
        state            TEXT NOT NULL CHECK (state IN ('pending', 'enabled', 'refused')),
        error            TEXT,
        updated_at       INTEGER NOT NULL
    );
    "#,
    // v10: the fast reconnect. `direct_tls`: the explicit server speaks TLS at once (XEP-0368).
    // `login`: this installation's SASL2 client id (FAST tokens are tied to it), and the FAST
    // token (XEP-0484) when the server gave one; the file is owner-only like the password; the
    // server's last SASL2 offer (a new process pipelines its login on it).
    r#"
    ALTER TABLE accounts ADD COLUMN direct_tls INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE login (
        account_id       INTEGER PRIMARY KEY REFERENCES accounts(id),
        client_id        TEXT NOT NULL,
        fast_mechanism   TEXT,
        fast_token       TEXT,
        fast_expires_ms  INTEGER,
        fast_count       INTEGER NOT NULL DEFAULT 0,
        sasl2_offer      TEXT                          -- the server's last <authentication/>
    );
    "#,
    // v11: entity capabilities (XEP-0115). `caps`: what a hash stands for, kept only once the
    // hash computed from the peer's answer matched (shared by every account: a hash names the
    // same features for everyone); JSON lists. `peer_caps`: the hash each online peer resource
    // announced, emptied on every new session (presence comes again).
    r#"
    CREATE TABLE caps (
        algo             TEXT NOT NULL,
        ver              TEXT NOT NULL,
        identities       TEXT NOT NULL,
        features         TEXT NOT NULL,
        verified_at      INTEGER NOT NULL,
        PRIMARY KEY (algo, ver)
    );
    CREATE TABLE peer_caps (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        jid              TEXT NOT NULL,
        algo             TEXT NOT NULL,
        ver              TEXT NOT NULL,
        seen_at          INTEGER NOT NULL,
        PRIMARY KEY (account_id, jid)
    );
    "#,
    // v12: full-text search (store/search.rs). An external-content FTS5 index over the text a
    // person reads (the view `messages_text`: messages and corrections; reactions and
    // retractions have none), kept by triggers in the same statement as the row, so in the same
    // transaction. A later migration that rebuilds `messages` must create these triggers again.
    // `prefix = '2 3'`: the last word is a prefix (search as one types), and a short prefix
    // without an index of its own merges every word it starts (`lo*` over 1,000,000 messages:
    // 122 ms; with it 0.06 ms, for an index 2.3x the size).
    r#"
    CREATE VIEW messages_text AS
        SELECT seq_local, body FROM messages WHERE action IS NULL OR action = 'correct';
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        body, content = 'messages_text', content_rowid = 'seq_local',
        tokenize = 'unicode61 remove_diacritics 2',
        prefix = '2 3'
    );
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
        WHEN new.action IS NULL OR new.action = 'correct' BEGIN
        INSERT INTO messages_fts (rowid, body) VALUES (new.seq_local, new.body);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
        WHEN old.action IS NULL OR old.action = 'correct' BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.seq_local, old.body);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, action ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body)
            SELECT 'delete', old.seq_local, old.body
            WHERE old.action IS NULL OR old.action = 'correct';
        INSERT INTO messages_fts (rowid, body)
            SELECT new.seq_local, new.body WHERE new.action IS NULL OR new.action = 'correct';
    END;
    INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
    "#,
    // v13: the blocklist (XEP-0191, store/blocking.rs): per entry (a bare or full JID, or a
    // domain) the user's wish and what the server said of it; a confirmed unblock removes the row.
    r#"
    CREATE TABLE blocklist (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        jid              TEXT NOT NULL,
        want             TEXT NOT NULL CHECK (want IN ('block', 'unblock')),
        state            TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'refused')),
        error            TEXT,
        updated_at       INTEGER NOT NULL,
        PRIMARY KEY (account_id, jid)
    );
    "#,
    // v14: bookmarks (XEP-0402, store/bookmarks.rs): what is still to be told to the server of
    // a room's bookmark. The rooms already here are to be published, so that a first sync
    // against the server's list never takes them for rooms left on another device.
    r#"
    CREATE TABLE bookmark_wishes (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        jid              TEXT NOT NULL,
        want             TEXT NOT NULL CHECK (want IN ('publish', 'retract')),
        nick             TEXT,
        updated_at       INTEGER NOT NULL,
        PRIMARY KEY (account_id, jid)
    );
    INSERT INTO bookmark_wishes (account_id, jid, want, nick, updated_at)
        SELECT account_id, jid, 'publish', nick, 0 FROM rooms;
    "#,
    // v15: several accounts in one store (store/accounts.rs): an account can be disabled.
    r#"
    ALTER TABLE accounts ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
    "#,
    // v16: the conversation list's counts (store/messages.rs, CONVERSATIONS_SQL) from indexes
    // that hold only the rows counted, so the list costs a seek per conversation on any size
    // of store.
    r#"
    CREATE INDEX messages_unread ON messages (account_id, peer)
        WHERE direction = 'in' AND state = 'received' AND action IS NULL;
    CREATE INDEX messages_failed ON messages (account_id, peer) WHERE state = 'failed';
    "#,
    // v17: who is in each room we are in (XEP-0045 occupant presence), as the room last said;
    // emptied when the room is joined anew.
    r#"
    CREATE TABLE occupants (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        room             TEXT NOT NULL,
        nick             TEXT NOT NULL,
        jid              TEXT,
        role             TEXT NOT NULL,
        affiliation      TEXT NOT NULL,
        updated_at       INTEGER NOT NULL,
        PRIMARY KEY (account_id, room, nick)
    );
    "#,
    // v18: direct invitations (XEP-0249): the room a message invites to.
    r#"
    ALTER TABLE messages ADD COLUMN invite TEXT;
    "#,
    // v19: profiles (store/profiles.rs): avatars by their SHA-1 (XEP-0084 / XEP-0153), what each
    // contact (and our own account) publishes of itself, and the user's own changes still to
    // be told to the server.
    r#"
    CREATE TABLE avatars (
        sha1             TEXT PRIMARY KEY,
        mime             TEXT NOT NULL,
        data             BLOB NOT NULL,
        created_at       INTEGER NOT NULL
    );
    CREATE TABLE profiles (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        jid              TEXT NOT NULL,
        nick             TEXT,
        nick_source      TEXT CHECK (nick_source IN ('pep', 'vcard')),
        full_name        TEXT,
        avatar           TEXT REFERENCES avatars(sha1),
        avatar_source    TEXT CHECK (avatar_source IN ('pep', 'vcard')),
        updated_at       INTEGER NOT NULL,
        PRIMARY KEY (account_id, jid)
    );
    CREATE TABLE profile_wishes (
        account_id       INTEGER NOT NULL REFERENCES accounts(id),
        what             TEXT NOT NULL CHECK (what IN ('nick', 'avatar')),
        value            TEXT,
        updated_at       INTEGER NOT NULL,
        PRIMARY KEY (account_id, what)
    );
    "#,
];

/// The schema version this build writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Whether the database is older than [`LATEST`] (a new, empty file too). Refuses a newer one.
pub fn needs_migration(conn: &Connection, path: &Path) -> Result<bool> {
    Ok(version(conn, path)? < LATEST)
}

fn version(conn: &Connection, path: &Path) -> Result<i64> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > LATEST {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: LATEST,
        });
    }
    Ok(version)
}

/// Brings the database to [`LATEST`], one transaction per step. Refuses a newer database.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let version = version(conn, path)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// v5 -> v6 rebuilds `messages`: every row and column survives, the indexes are back, and the
    /// new `checking` state is accepted (it was refused before).
    #[test]
    fn the_v6_rebuild_keeps_every_row_and_accepts_checking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = Connection::open(&path).unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(5) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO accounts (id, jid, password, resource, created_at)
                 VALUES (1, 'alice@localhost', 'pw', 'r', 0);
             INSERT INTO messages (id, origin_id, stanza_id, account_id, peer, direction, body,
                                   state, sm_seq, error, attempts, created_at, updated_at, kind,
                                   from_nick)
                 VALUES ('m1', 'm1', 's1', 1, 'bob@localhost', 'out', 'hello', 'hibernated', 7,
                         NULL, 2, 10, 11, 'chat', NULL);",
        )
        .unwrap();
        let refused = conn.execute("UPDATE messages SET state = 'checking'", []);
        assert!(refused.is_err(), "v5 refuses the new state");
        migrate(&mut conn, &path).unwrap();
        let row: (String, String, i64, i64, String) = conn
            .query_row(
                "SELECT id, state, sm_seq, attempts, stanza_id FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(row, ("m1".into(), "hibernated".into(), 7, 2, "s1".into()));
        conn.execute("UPDATE messages SET state = 'checking'", [])
            .unwrap();
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'
                 AND name LIKE 'messages_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // v6's eight, v7's two (targets, and actions waiting for theirs), v16's two (unread,
        // failed).
        assert_eq!(indexes, 12);
        assert_eq!(version(&conn, &path).unwrap(), LATEST);
    }

    /// v11 -> v12 indexes the messages already there (and only the ones with text to read).
    #[test]
    fn the_v12_search_index_covers_the_messages_already_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v11.db");
        let mut conn = Connection::open(&path).unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(11) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO accounts (id, jid, password, resource, created_at)
                 VALUES (1, 'alice@localhost', 'pw', 'r', 0);
             INSERT INTO messages (seq_local, id, account_id, peer, direction, body, state,
                                   created_at, updated_at, action, target)
                 VALUES (1, 'm1', 1, 'bob@localhost', 'in', 'an old hello', 'received', 1, 1,
                         NULL, NULL),
                        (2, 'c1', 1, 'bob@localhost', 'in', 'an old hallo', 'received', 2, 2,
                         'correct', 'm1'),
                        (3, 'r1', 1, 'bob@localhost', 'in', 'hello', 'received', 3, 3,
                         'react', 'm1');",
        )
        .unwrap();
        migrate(&mut conn, &path).unwrap();
        let hits = |word: &str| -> Vec<i64> {
            let mut stmt = conn
                .prepare(
                    "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?1 ORDER BY rowid",
                )
                .unwrap();
            stmt.query_map([word], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(hits("old"), [1, 2]);
        assert_eq!(hits("hello"), [1], "a reaction's text is not indexed");
        conn.execute(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
            [],
        )
        .unwrap();
    }
}
