//! `tether`: the headless front end. Every event is one JSON object per line on stdout; errors are
//! one line on stderr and an exit code per class (see the README): 2 usage, 3 authentication,
//! 4 network or timeout, 5 database, 6 TLS, 7 protocol.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tether_core::contract::Defaults;

use clap::{Args, Parser, Subcommand};
use tether_core::events::Event;
use tether_core::store::{MessageFilter, NewAccount, Store, StoreOptions};
use tether_core::{Client, ClientConfig, Direction, Error, Inbox, State};

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Tether: an XMPP client that never loses a message"
)]
struct Cli {
    /// The store (a database file holding one account or several).
    #[arg(long, env = "TETHER_DB", global = true, default_value = "tether.db")]
    db: PathBuf,
    /// Which account of the store (a bare JID); needed when the store holds several. `run`
    /// without it runs every enabled account side by side.
    #[arg(long, env = "TETHER_ACCOUNT", global = true)]
    account: Option<String>,
    /// Log filter for stderr (e.g. info, debug, tether_core=trace). Also RUST_LOG.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the account.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Commit a message (state `queued`) and print its id. Works offline.
    Send(SendArgs),
    /// Connect (resuming when possible), deliver the outbox, receive; print events as JSON lines.
    Run(RunArgs),
    /// List messages, one JSON object per line.
    Messages(MessagesArgs),
    /// Resend failed messages (the user's confirmation). Keeps each message's id and origin-id.
    Resend(Selection),
    /// Discard failed messages (the user's decision).
    Discard(Selection),
    /// Print the persisted stream-management state as JSON.
    Sm,
    /// Mark the conversation with a contact read (sends a displayed marker).
    MarkRead {
        /// The contact.
        #[arg(long)]
        peer: String,
        /// Up to this incoming message id (default: the newest).
        #[arg(long)]
        up_to: Option<String>,
    },
    /// Invite someone to a room (XEP-0249 direct invitation, delivered as a message); prints its
    /// id.
    Invite {
        /// The room's bare JID.
        #[arg(long)]
        room: String,
        /// Who is invited.
        #[arg(long)]
        to: String,
        /// Why, in your words.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Group chat rooms.
    #[command(subcommand)]
    Room(RoomCmd),
    /// Profiles: avatars (XEP-0084, XEP-0153), nicknames (XEP-0172) and vCards (XEP-0292,
    /// XEP-0054).
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// List contacts (roster with last seen presence), one JSON object per line.
    Contacts,
    /// Ask a contact to share presence.
    Subscribe {
        /// The contact's bare JID.
        #[arg(long)]
        jid: String,
    },
    /// List pending incoming subscription requests.
    Subscriptions,
    /// Answer a subscription request.
    #[command(subcommand)]
    Subscription(SubscriptionCmd),
    /// Correct our message (XEP-0308); prints the correction's id. Works offline.
    Correct {
        /// The conversation.
        #[arg(long)]
        peer: String,
        /// The message to correct.
        #[arg(long)]
        id: String,
        /// The new text.
        #[arg(long)]
        body: String,
    },
    /// Retract our message (XEP-0424); prints the retraction's id. Works offline.
    Retract {
        /// The conversation.
        #[arg(long)]
        peer: String,
        /// The message to take back.
        #[arg(long)]
        id: String,
    },
    /// Set our reactions to a message (XEP-0444; no --emoji takes ours away); prints the id.
    React {
        /// The conversation.
        #[arg(long)]
        peer: String,
        /// The message reacted to.
        #[arg(long)]
        id: String,
        /// An emoji (repeat for several).
        #[arg(long)]
        emoji: Vec<String>,
    },
    /// Answer a message (XEP-0461); prints the reply's id. Works offline.
    Reply {
        /// The conversation.
        #[arg(long)]
        peer: String,
        /// The message answered.
        #[arg(long)]
        id: String,
        /// The text.
        #[arg(long)]
        body: String,
    },
    /// Send a file (XEP-0363): copied into Tether's store and committed at once; uploaded and
    /// sent by `run`. Prints the message id. Works offline.
    SendFile {
        /// Recipient bare JID.
        #[arg(long)]
        to: String,
        /// The file.
        #[arg(long)]
        path: std::path::PathBuf,
    },
    /// Push notifications (XEP-0357).
    #[command(subcommand)]
    Push(PushCmd),
    /// A push arrived: within --deadline-secs, resume (or start) the session, take and ack
    /// everything the server holds, send what is queued, and suspend keeping the stream. Prints
    /// the events, then a summary (`{"event":"wake",...}`). Leaves the stream to another process
    /// that drives it (outcome `yielded`).
    Wake {
        /// The deadline (an iOS Notification Service Extension has about 25 s).
        #[arg(long, default_value_t = 25)]
        deadline_secs: u64,
        /// Put the messages' texts in the summary.
        #[arg(long)]
        bodies: bool,
    },
    /// Every version of a message's text, oldest first, one JSON object per line.
    Edits {
        /// The conversation.
        #[arg(long)]
        peer: String,
        /// The message.
        #[arg(long)]
        id: String,
    },
    /// What a contact's online clients support, from their verified capabilities (XEP-0115):
    /// `{"jid", "known", "features"}`.
    Features {
        /// The contact.
        #[arg(long)]
        jid: String,
    },
    /// Block a contact, a full JID or a whole domain (XEP-0191): nothing it sends is stored or
    /// shown from now on, and nothing can be written to it. Kept, and told to the server by
    /// `run`. Works offline. Prints the blocklist.
    Block {
        /// The JID or domain.
        #[arg(long)]
        jid: String,
    },
    /// Unblock (told to the server by `run`). Prints the blocklist.
    Unblock {
        /// The JID or domain.
        #[arg(long)]
        jid: String,
    },
    /// The blocklist, one JSON object per line (`{"jid", "want", "state", "error"}`).
    Blocklist,
    /// Full-text search: the messages whose current text has every word (the last as a prefix),
    /// newest first, one JSON object per line (`{"cursor", "account", "message"}`). Words are
    /// never query syntax. Works offline.
    Search {
        /// The words.
        text: String,
        /// Only this conversation.
        #[arg(long)]
        peer: Option<String>,
        /// The next page: the last line's `cursor`.
        #[arg(long)]
        before: Option<i64>,
        /// Most results.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum PushCmd {
    /// Push to an app server: kept, and told to the server on every new session (by `run`).
    Enable {
        /// The app server's JID.
        #[arg(long)]
        service: String,
        /// The node it provisioned for this device.
        #[arg(long)]
        node: String,
        /// Read the publish-options secret from this environment variable.
        #[arg(long)]
        secret_env: Option<String>,
    },
    /// Stop pushing (told to the server by `run`). Idempotent.
    Disable,
    /// Print the push settings and what the server last said (without the secret).
    Show,
}

#[derive(Subcommand)]
enum ProfileCmd {
    /// A profile as JSON (`{"jid", "nick", "full_name", "avatar", "avatar_mime"}`; ours, with
    /// `"told"`, without `--jid`). Works offline.
    Show {
        /// Whose (bare JID); our own by default.
        #[arg(long)]
        jid: Option<String>,
    },
    /// Change our own profile: kept at once, published by `run` (now if it runs in this
    /// process, else on its next session). Works offline. Prints our profile.
    Set {
        /// A new nickname (an empty one removes it).
        #[arg(long)]
        nick: Option<String>,
        /// A new avatar: a PNG, JPEG, GIF or WebP file of at most 128 KiB.
        #[arg(long, conflicts_with = "no_avatar")]
        avatar: Option<std::path::PathBuf>,
        /// Remove the avatar.
        #[arg(long)]
        no_avatar: bool,
    },
    /// Write someone's avatar (as stored) to a file.
    Avatar {
        /// Whose (bare JID).
        #[arg(long)]
        jid: String,
        /// Where to write it.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum RoomCmd {
    /// Join a room (persisted, rejoined on every new session).
    Join {
        /// The room's bare JID.
        room: String,
        /// Our nickname.
        #[arg(long)]
        nick: String,
    },
    /// Leave a room.
    Leave {
        /// The room's bare JID.
        room: String,
    },
    /// List rooms.
    List,
    /// Who is in a room (as the room last said), one JSON line each.
    Occupants {
        /// The room's bare JID.
        room: String,
    },
}

#[derive(Subcommand)]
enum SubscriptionCmd {
    /// Accept (and ask back, so both see each other's presence).
    Accept {
        /// Who asked.
        #[arg(long)]
        jid: String,
    },
    /// Deny.
    Deny {
        /// Who asked.
        #[arg(long)]
        jid: String,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Add an account (a store holds any number of them).
    Add(AccountAdd),
    /// Create the account on its server (in-band registration, XEP-0077; with an invitation
    /// link, XEP-0401), then add it; the JID's user part is the name asked for.
    Register {
        #[command(flatten)]
        account: AccountAdd,
        /// An invitation link (`xmpp:example.org?register;preauth=...`).
        #[arg(long)]
        invite: Option<String>,
    },
    /// Print the account (without its password) as JSON.
    Show,
    /// Print every account of the store, one JSON line each.
    List,
    /// Let the account connect again (`run` starts it).
    Enable {
        /// The account's bare JID.
        jid: String,
    },
    /// Keep the account from connecting; its history and queue stay.
    Disable {
        /// The account's bare JID.
        jid: String,
    },
    /// Remove the account and everything it holds (history, queue, files no other account has).
    Remove {
        /// The account's bare JID.
        jid: String,
        /// Yes: its history goes too.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct AccountAdd {
    /// The bare JID, e.g. alice@example.org.
    #[arg(long)]
    jid: String,
    /// Read the password from this environment variable.
    #[arg(
        long,
        conflicts_with = "password_stdin",
        required_unless_present = "password_stdin"
    )]
    password_env: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Connect to HOST:PORT instead of looking up the domain's SRV record.
    #[arg(long)]
    server: Option<String>,
    /// Trust the CA certificates in this PEM file instead of the system's (test servers).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Do not use TLS. For loopback tests only: never use it over a network.
    #[arg(long)]
    insecure_plaintext: bool,
    /// The --server speaks TLS from the first byte (XEP-0368 Direct TLS, often port 5223)
    /// instead of STARTTLS. Without --server, Tether looks up `_xmpps-client` SRV records itself.
    #[arg(long, requires = "server", conflicts_with = "insecure_plaintext")]
    direct_tls: bool,
}

#[derive(Args)]
struct SendArgs {
    /// Recipient bare JID.
    #[arg(long, required_unless_present = "stdin")]
    to: Option<String>,
    /// Message text.
    #[arg(long, required_unless_present = "stdin")]
    body: Option<String>,
    /// Read JSON lines {"to": "...", "body": "..."} from stdin and commit them all in one transaction.
    #[arg(long, conflicts_with_all = ["to", "body"])]
    stdin: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Exit 0 once online and no message is queued, sent, hibernated or retrying (and stdin is
    /// closed, with --stdin).
    #[arg(long)]
    until_idle: bool,
    /// Read JSON lines {"to": "...", "body": "..."} from stdin and send each.
    #[arg(long)]
    stdin: bool,
    /// Give up after this many seconds (exit 4).
    #[arg(long)]
    timeout: Option<u64>,
    /// First reconnect delay in milliseconds (doubles per failure, with jitter).
    #[arg(long, default_value_t = Defaults::default().reconnect_min_ms)]
    reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds.
    #[arg(long, default_value_t = Defaults::default().reconnect_max_ms)]
    reconnect_max_ms: u64,
    /// The timer profile: `desktop` (a probe after 20 s of silence, another process's commits
    /// looked for every 200 ms) or `mobile` (a probe after 300 s, no polling timer).
    #[arg(long, default_value = "desktop", value_parser = ["desktop", "mobile"])]
    profile: String,
    /// Seconds of silence after which the link is probed (default: the profile's).
    #[arg(long)]
    keepalive_secs: Option<u64>,
    /// Seconds a probe may go unanswered before the link counts as dead (default: the
    /// profile's).
    #[arg(long)]
    dead_after_secs: Option<u64>,
    /// How many days back the first archive sync reaches.
    #[arg(long, default_value_t = Defaults::default().mam_first_sync_days)]
    mam_first_sync_days: u64,
    /// The most the server may send without completing a stanza, in KiB.
    #[arg(long, default_value_t = Defaults::default().max_stanza_kib)]
    max_stanza_kib: u64,
}

#[derive(Args)]
struct MessagesArgs {
    /// Only messages with this peer.
    #[arg(long)]
    peer: Option<String>,
    /// Only messages in this state.
    #[arg(long)]
    state: Option<State>,
    /// Only this direction (in, out).
    #[arg(long, value_parser = parse_direction)]
    direction: Option<Direction>,
}

#[derive(Args)]
struct Selection {
    /// Message ids.
    #[arg(required_unless_present = "all_failed")]
    ids: Vec<String>,
    /// Every failed message.
    #[arg(long, conflicts_with = "ids")]
    all_failed: bool,
}

#[derive(serde::Deserialize)]
struct OutLine {
    to: String,
    body: String,
}

/// A line of `run --stdin`: a message to send, or a lifecycle command.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StdinLine {
    Command {
        cmd: String,
        /// For `block` and `unblock`.
        #[serde(default)]
        jid: Option<String>,
    },
    /// `{"to": "...", "chat_state": "composing"}`: our chat state in that conversation (never
    /// stored; dropped when offline).
    ChatState {
        to: String,
        chat_state: tether_core::chat_state::ChatState,
    },
    Message(OutLine),
}

fn parse_direction(s: &str) -> Result<Direction, String> {
    match s {
        "in" => Ok(Direction::In),
        "out" => Ok(Direction::Out),
        _ => Err(format!("{s:?} is not a direction (in, out)")),
    }
}

/// Waits for SIGTERM or Ctrl-C (Unix), or Ctrl-C and the console's close (other platforms).
async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                eprintln!("tether: cannot watch SIGTERM ({e}); Ctrl-C still stops");
                if let Err(e) = tokio::signal::ctrl_c().await {
                    eprintln!("tether: cannot watch Ctrl-C either: {e}");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("tether: cannot watch Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal: a log read by a program (or a file) gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Runs `change` on the blocklist, then prints the list, one entry a line.
fn print_blocklist(
    client: &Client,
    change: impl FnOnce(&Client) -> Result<(), Error>,
) -> Result<(), Error> {
    change(client)?;
    for entry in client.blocklist()? {
        print_json(&entry);
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("tether: cannot print an event: {e}"),
    }
}

/// Appends one JSON line to `out`.
fn push_json(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    match serde_json::to_writer(&mut *out, value) {
        Ok(()) => out.push(b'\n'),
        Err(e) => eprintln!("tether: cannot print an event: {e}"),
    }
}

/// Prints `first` and every event already waiting behind it (up to 256 KiB of them) in one write
/// (a burst of messages makes several events each; a write per line was the sender's most
/// frequent system call). Returns false when nothing was printed (no event left).
fn print_events<E: serde::Serialize + Clone>(
    first: Result<E, tokio::sync::broadcast::error::TryRecvError>,
    events: &mut tokio::sync::broadcast::Receiver<E>,
) -> bool {
    use std::io::Write as _;
    use tokio::sync::broadcast::error::TryRecvError;
    let mut out = Vec::with_capacity(4096);
    let mut next = first;
    loop {
        match next {
            Ok(ev) => push_json(&mut out, &ev),
            // Missed events are said, and those after them still printed.
            Err(TryRecvError::Lagged(n)) => push_json(
                &mut out,
                &serde_json::json!({"event": "lagged", "missed": n}),
            ),
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
        if out.len() >= 256 * 1024 {
            break;
        }
        next = events.try_recv();
    }
    if out.is_empty() {
        return false;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&out).and_then(|()| stdout.flush()) {
        eprintln!("tether: cannot print events: {e}");
    }
    true
}

fn dispatch(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Account(AccountCmd::Add(a)) => {
            let new = new_account(a)?;
            let account = Client::add_account(&cli.db, &new)?;
            print_json(&serde_json::json!({"event": "account:added", "jid": account.jid}));
            Ok(())
        }
        Command::Account(AccountCmd::Register { account, invite }) => {
            let new = new_account(account)?;
            let inbox = Inbox::open(&cli.db, ClientConfig::default())?;
            let client = runtime()?.block_on(inbox.register_account(&new, invite.as_deref()))?;
            print_json(&serde_json::json!({
                "event": "account:registered", "jid": client.account().jid,
            }));
            Ok(())
        }
        Command::Account(AccountCmd::List) => {
            for a in Inbox::open(&cli.db, ClientConfig::default())?.accounts()? {
                print_json(&serde_json::json!({"jid": a.jid, "enabled": a.enabled}));
            }
            Ok(())
        }
        Command::Account(AccountCmd::Enable { jid }) => set_enabled(&cli.db, &jid, true),
        Command::Account(AccountCmd::Disable { jid }) => set_enabled(&cli.db, &jid, false),
        Command::Account(AccountCmd::Remove { jid, yes }) => {
            if !yes {
                return Err(Error::Usage(format!(
                    "removing {jid} deletes its history too: say --yes"
                )));
            }
            let inbox = Inbox::open(&cli.db, ClientConfig::default())?;
            runtime()?.block_on(inbox.remove_account(&jid))?;
            print_json(&serde_json::json!({"event": "account:removed", "jid": jid}));
            Ok(())
        }
        Command::Account(AccountCmd::Show) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            let a = client.account();
            print_json(&serde_json::json!({
                "jid": a.jid, "server": a.server, "ca_file": a.ca_file,
                "insecure_plaintext": a.insecure_plaintext, "direct_tls": a.direct_tls,
                "resource": a.resource,
            }));
            Ok(())
        }
        Command::Send(s) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            let batch = if s.stdin {
                read_lines(std::io::stdin().lock())?
            } else {
                vec![(s.to.unwrap_or_default(), s.body.unwrap_or_default())]
            };
            for id in client.send_many(&batch)? {
                println!("{id}");
            }
            Ok(())
        }
        Command::Messages(m) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            let filter = MessageFilter {
                peer: m.peer,
                state: m.state,
                direction: m.direction,
            };
            for row in client.messages(&filter)? {
                print_json(&row);
            }
            Ok(())
        }
        Command::Resend(sel) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            let ids = selection(&client, sel)?;
            client.resend(&ids)?;
            print_json(&serde_json::json!({"event": "resend", "ids": ids}));
            Ok(())
        }
        Command::Discard(sel) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            let ids = selection(&client, sel)?;
            client.discard(&ids)?;
            print_json(&serde_json::json!({"event": "discard", "ids": ids}));
            Ok(())
        }
        Command::Sm => {
            let store = Store::open(
                &cli.db,
                &StoreOptions {
                    create: false,
                    ..Default::default()
                },
            )?;
            let account = match &cli.account {
                Some(jid) => store.account_by_jid(jid)?,
                None => store.account()?,
            };
            print_json(&store.load_sm(account.id)?);
            Ok(())
        }
        Command::Run(r) => run(&cli.db, cli.account.as_deref(), r),
        Command::MarkRead { peer, up_to } => {
            let client = open(&cli.db, cli.account.as_deref())?;
            match client.mark_read(&peer, up_to.as_deref())? {
                Some((id, count)) => print_json(&serde_json::json!({
                    "event": "mark-read", "peer": peer, "up_to": id, "count": count
                })),
                None => print_json(&serde_json::json!({
                    "event": "mark-read", "peer": peer, "up_to": null, "count": 0
                })),
            }
            Ok(())
        }
        Command::Invite { room, to, reason } => {
            println!(
                "{}",
                open(&cli.db, cli.account.as_deref())?.invite(&room, &to, reason.as_deref())?
            );
            Ok(())
        }
        Command::Room(cmd) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            match cmd {
                RoomCmd::Join { room, nick } => {
                    client.join_room(&room, &nick)?;
                    print_json(
                        &serde_json::json!({"event": "room:join", "room": room, "nick": nick}),
                    );
                }
                RoomCmd::Leave { room } => {
                    client.leave_room(&room)?;
                    print_json(&serde_json::json!({"event": "room:leave", "room": room}));
                }
                RoomCmd::List => {
                    for room in client.rooms()? {
                        print_json(&room);
                    }
                }
                RoomCmd::Occupants { room } => {
                    for o in client.occupants(&room)? {
                        print_json(&o);
                    }
                }
            }
            Ok(())
        }
        Command::Contacts => {
            let client = open(&cli.db, cli.account.as_deref())?;
            for c in client.contacts()? {
                print_json(&c);
            }
            Ok(())
        }
        Command::Correct { peer, id, body } => {
            println!(
                "{}",
                open(&cli.db, cli.account.as_deref())?.correct(&peer, &id, &body)?
            );
            Ok(())
        }
        Command::Retract { peer, id } => {
            println!(
                "{}",
                open(&cli.db, cli.account.as_deref())?.retract(&peer, &id)?
            );
            Ok(())
        }
        Command::React { peer, id, emoji } => {
            println!(
                "{}",
                open(&cli.db, cli.account.as_deref())?.react(&peer, &id, &emoji)?
            );
            Ok(())
        }
        Command::Reply { peer, id, body } => {
            println!(
                "{}",
                open(&cli.db, cli.account.as_deref())?.reply(&peer, &id, &body)?
            );
            Ok(())
        }
        Command::SendFile { to, path } => {
            println!(
                "{}",
                open(&cli.db, cli.account.as_deref())?.send_file(&to, &path)?
            );
            Ok(())
        }
        Command::Push(cmd) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            match cmd {
                PushCmd::Enable {
                    service,
                    node,
                    secret_env,
                } => {
                    let secret = match secret_env {
                        Some(var) => Some(std::env::var(&var).map_err(|_| {
                            Error::Usage(format!("environment variable {var} is not set"))
                        })?),
                        None => None,
                    };
                    client.enable_push(&service, &node, secret.as_deref())?;
                }
                PushCmd::Disable => {
                    client.disable_push()?;
                }
                PushCmd::Show => {}
            }
            let shown = client.push_settings()?.map(|p| {
                serde_json::json!({
                    "service": p.service,
                    "node": p.node,
                    "want": format!("{:?}", p.want).to_lowercase(),
                    "state": format!("{:?}", p.state).to_lowercase(),
                    "error": p.error,
                })
            });
            print_json(&serde_json::json!({"event": "push:settings", "settings": shown}));
            Ok(())
        }
        Command::Wake {
            deadline_secs,
            bodies,
        } => wake(
            &cli.db,
            cli.account.as_deref(),
            Duration::from_secs(deadline_secs),
            bodies,
        ),
        Command::Edits { peer, id } => {
            for e in open(&cli.db, cli.account.as_deref())?.edits(&peer, &id)? {
                print_json(&e);
            }
            Ok(())
        }
        Command::Block { jid } => {
            print_blocklist(&open(&cli.db, cli.account.as_deref())?, |c| c.block(&jid))
        }
        Command::Unblock { jid } => print_blocklist(&open(&cli.db, cli.account.as_deref())?, |c| {
            c.unblock(&jid).map(drop)
        }),
        Command::Profile(cmd) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            let own = client.account().jid.clone();
            let show = |client: &Client, jid: &str| -> Result<(), Error> {
                let profile = client.profile(jid)?.unwrap_or(tether_core::store::Profile {
                    jid: jid.to_owned(),
                    ..Default::default()
                });
                let mut value =
                    serde_json::to_value(&profile).map_err(|e| Error::Internal(e.to_string()))?;
                if jid == own {
                    value["told"] = serde_json::Value::Bool(client.profile_told()?);
                }
                print_json(&value);
                Ok(())
            };
            match cmd {
                ProfileCmd::Show { jid } => show(&client, jid.as_deref().unwrap_or(&own)),
                ProfileCmd::Set {
                    nick,
                    avatar,
                    no_avatar,
                } => {
                    if let Some(nick) = nick {
                        client.set_nick(Some(&nick))?;
                    }
                    if let Some(path) = avatar {
                        client.set_avatar_file(&path)?;
                    }
                    if no_avatar {
                        client.clear_avatar()?;
                    }
                    show(&client, &own)
                }
                ProfileCmd::Avatar { jid, out } => {
                    let profile = client.profile(&jid)?;
                    let Some(sha1) = profile.and_then(|p| p.avatar) else {
                        return Err(Error::Usage(format!("no avatar of {jid} is known")));
                    };
                    let (mime, data) = client.avatar(&sha1)?.ok_or_else(|| {
                        Error::Internal(format!("the avatar {sha1} is not stored"))
                    })?;
                    std::fs::write(&out, &data).map_err(|e| {
                        Error::Usage(format!("cannot write {}: {e}", out.display()))
                    })?;
                    print_json(&serde_json::json!({
                        "jid": jid, "avatar": sha1, "mime": mime, "bytes": data.len(),
                        "out": out,
                    }));
                    Ok(())
                }
            }
        }
        Command::Blocklist => print_blocklist(&open(&cli.db, cli.account.as_deref())?, |_| Ok(())),
        Command::Features { jid } => {
            let features = open(&cli.db, cli.account.as_deref())?.peer_features(&jid)?;
            print_json(&serde_json::json!({
                "jid": jid,
                "known": features.is_some(),
                "features": features.unwrap_or_default(),
            }));
            Ok(())
        }
        Command::Search {
            text,
            peer,
            before,
            limit,
        } => {
            for hit in open(&cli.db, cli.account.as_deref())?.search(
                &text,
                peer.as_deref(),
                before,
                limit,
            )? {
                print_json(&hit);
            }
            Ok(())
        }
        Command::Subscribe { jid } => {
            let client = open(&cli.db, cli.account.as_deref())?;
            client.request_subscription(&jid)?;
            print_json(&serde_json::json!({"event": "subscribe", "jid": jid}));
            Ok(())
        }
        Command::Subscriptions => {
            let client = open(&cli.db, cli.account.as_deref())?;
            for jid in client.subscription_requests()? {
                print_json(&serde_json::json!({ "jid": jid }));
            }
            Ok(())
        }
        Command::Subscription(cmd) => {
            let client = open(&cli.db, cli.account.as_deref())?;
            let (jid, accept) = match cmd {
                SubscriptionCmd::Accept { jid } => (jid, true),
                SubscriptionCmd::Deny { jid } => (jid, false),
            };
            client.answer_subscription_request(&jid, accept)?;
            print_json(&serde_json::json!({
                "event": if accept { "subscription:accepted" } else { "subscription:denied" },
                "jid": jid
            }));
            Ok(())
        }
    }
}

/// Opens the store for a one-shot command and waits for its integrity check, so that every
/// command refuses a damaged file (exit 5), reads included. (`run` serves reads at once and waits
/// for the check before it connects, as the apps do.)
fn open(db: &std::path::Path, account: Option<&str>) -> Result<Client, Error> {
    let client = open_with(db, account, ClientConfig::default())?;
    client.verify()?;
    Ok(client)
}

/// The client of `account`, or of the store's only account.
fn open_with(
    db: &std::path::Path,
    account: Option<&str>,
    config: ClientConfig,
) -> Result<Client, Error> {
    match account {
        Some(jid) => Client::open_account(db, jid, config),
        None => Client::open(db, config),
    }
}

/// The account `a` describes, with its password from where `a` says.
fn new_account(a: AccountAdd) -> Result<NewAccount, Error> {
    let password = match &a.password_env {
        Some(var) => std::env::var(var)
            .map_err(|_| Error::Usage(format!("environment variable {var} is not set")))?,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Error::Usage(format!("cannot read the password: {e}")))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        return Err(Error::Usage("the password is empty".into()));
    }
    Ok(NewAccount {
        jid: a.jid,
        password,
        server: a.server,
        ca_file: a.ca_file.map(|p| p.to_string_lossy().into_owned()),
        insecure_plaintext: a.insecure_plaintext,
        direct_tls: a.direct_tls,
    })
}

fn set_enabled(db: &std::path::Path, jid: &str, enabled: bool) -> Result<(), Error> {
    Inbox::open(db, ClientConfig::default())?.set_enabled(jid, enabled)?;
    print_json(&serde_json::json!({
        "event": if enabled { "account:enabled" } else { "account:disabled" }, "jid": jid,
    }));
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))
}

fn selection(client: &Client, sel: Selection) -> Result<Vec<String>, Error> {
    if sel.all_failed {
        client.failed_ids()
    } else {
        Ok(sel.ids)
    }
}

/// Parses JSON lines of outgoing messages. A bad line is an error naming it: nothing is committed,
/// so nothing the user wrote is half-sent.
fn read_lines(input: impl BufRead) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Error::Usage(format!("cannot read stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let m: OutLine = serde_json::from_str(&line)
            .map_err(|e| Error::Usage(format!("stdin line {}: {e}", n + 1)))?;
        out.push((m.to, m.body));
    }
    Ok(out)
}

/// Most `run --stdin` lines committed in one transaction.
const STDIN_BATCH: usize = 1_000;

/// Handles lines of `run --stdin` that arrived together: consecutive messages are committed in
/// one transaction, commands run in their place. A line that cannot be taken is reported loudly
/// (stdout and stderr) and nothing of it is committed; the others are.
fn stdin_lines(c: &Client, lines: Vec<(usize, String)>) {
    let report = |kind: tether_core::events::ErrorKind, what: String| {
        eprintln!("tether: error: {what}");
        print_json(&Event::error(kind, what));
    };
    // The pending messages and their line numbers.
    let mut batch: Vec<(String, String)> = Vec::new();
    let mut numbers: Vec<usize> = Vec::new();
    let flush = |batch: &mut Vec<(String, String)>, numbers: &mut Vec<usize>| {
        if batch.is_empty() {
            return;
        }
        match c.send_many(batch) {
            Ok(_) => {}
            // One bad recipient refuses the whole transaction: commit one by one to say which.
            Err(Error::Usage(_)) => {
                for (n, (to, body)) in numbers.iter().zip(batch.iter()) {
                    if let Err(e) = c.send(to, body) {
                        report(e.kind(), format!("stdin line {n} was not committed: {e}"));
                    }
                }
            }
            Err(e) => {
                let (first, last) = (numbers[0], numbers[numbers.len() - 1]);
                report(
                    e.kind(),
                    format!("stdin lines {first} to {last} were not committed: {e}"),
                );
            }
        }
        batch.clear();
        numbers.clear();
    };
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<StdinLine>(&line) {
            Ok(StdinLine::Message(m)) => {
                batch.push((m.to, m.body));
                numbers.push(n);
            }
            Ok(StdinLine::ChatState { to, chat_state }) => {
                flush(&mut batch, &mut numbers);
                match c.set_chat_state(&to, chat_state) {
                    Ok(true) => {}
                    Ok(false) => report(
                        tether_core::events::ErrorKind::Network,
                        format!("stdin line {n}: offline, the chat state was dropped"),
                    ),
                    Err(e) => report(e.kind(), format!("stdin line {n}: {e}")),
                }
            }
            Ok(StdinLine::Command { cmd, jid }) => {
                flush(&mut batch, &mut numbers);
                match (cmd.as_str(), jid) {
                    ("block", Some(jid)) => {
                        if let Err(e) = c.block(&jid) {
                            report(e.kind(), format!("stdin line {n}: {e}"));
                        }
                    }
                    ("unblock", Some(jid)) => {
                        if let Err(e) = c.unblock(&jid) {
                            report(e.kind(), format!("stdin line {n}: {e}"));
                        }
                    }
                    (cmd, _) => match cmd {
                    "suspend" => c.suspend(),
                    "resume" => c.resume(),
                    "network-changed" => c.network_changed(),
                    "stats" => print_json(
                        &serde_json::json!({"event": "run:stats", "wakeups": c.wakeups(), "timer_wakeups": c.timer_wakeups()}),
                    ),
                    other => report(
                        tether_core::events::ErrorKind::Usage,
                        format!("stdin line {n}: unknown command {other:?} (suspend, resume, network-changed, stats; block and unblock with a jid)"),
                    ),
                    },
                }
            }
            Err(e) => report(
                tether_core::events::ErrorKind::Usage,
                format!("stdin line {n}: {e}"),
            ),
        }
    }
    flush(&mut batch, &mut numbers);
}

/// Prints the client's events as JSON lines while `work` runs, then what is left (lagged
/// notices included), and returns `work`'s result.
async fn print_events_while<E: serde::Serialize + Clone, T>(
    events: &mut tokio::sync::broadcast::Receiver<E>,
    work: impl std::future::Future<Output = T>,
) -> T {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            biased;
            ev = events.recv() => {
                let first = ev.map_err(|e| match e {
                    RecvError::Lagged(n) => TryRecvError::Lagged(n),
                    RecvError::Closed => TryRecvError::Closed,
                });
                print_events(first, events);
            }
            out = &mut work => break out,
        }
    };
    while print_events(events.try_recv(), events) {}
    out
}

fn wake(
    db: &std::path::Path,
    account: Option<&str>,
    deadline: Duration,
    bodies: bool,
) -> Result<(), Error> {
    let client = open_with(
        db,
        account,
        ClientConfig::profile(tether_core::config::Profile::Mobile),
    )?;
    runtime()?.block_on(async move {
        let mut events = client.subscribe();
        let summary = print_events_while(&mut events, client.wake(deadline, bodies)).await?;
        let mut line = serde_json::to_value(&summary)
            .map_err(|e| Error::Internal(format!("cannot print the summary: {e}")))?;
        line["event"] = serde_json::Value::from("wake");
        print_json(&line);
        Ok(())
    })
}

fn run(db: &std::path::Path, account: Option<&str>, r: RunArgs) -> Result<(), Error> {
    let base = ClientConfig::profile(if r.profile == "mobile" {
        tether_core::config::Profile::Mobile
    } else {
        tether_core::config::Profile::Desktop
    });
    let config = ClientConfig {
        reconnect_min: Duration::from_millis(r.reconnect_min_ms),
        reconnect_max: Duration::from_millis(r.reconnect_max_ms),
        keepalive: r.keepalive_secs.map_or(base.keepalive, Duration::from_secs),
        dead_after: r
            .dead_after_secs
            .map_or(base.dead_after, Duration::from_secs),
        mam_first_sync: Duration::from_secs(r.mam_first_sync_days * 24 * 3600),
        max_stanza_bytes: (r.max_stanza_kib as usize).saturating_mul(1024),
        ..base
    };
    if account.is_none() {
        let inbox = Inbox::open(db, config.clone())?;
        if inbox.accounts()?.len() > 1 {
            if r.stdin {
                return Err(Error::Usage(
                    "this store holds several accounts: --stdin sends from one, name it with --account"
                        .into(),
                ));
            }
            return run_inbox(inbox, r);
        }
    }
    let client = open_with(db, account, config)?;
    runtime()?.block_on(async move {
        let mut events = client.subscribe();
        client.set_exit_when_idle(r.until_idle && !r.stdin);
        if r.stdin {
            let c = client.clone();
            let until_idle = r.until_idle;
            // A thread reads the lines; another commits what has arrived together (one
            // transaction, one fsync, for a burst of lines), in order. Commits block (SQLite,
            // and the integrity check at first), so neither runs on the async runtime.
            let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
            std::thread::spawn(move || {
                for (n, line) in std::io::stdin().lock().lines().enumerate() {
                    match line {
                        Ok(line) => {
                            if tx.send((n + 1, line)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            eprintln!("tether: error: reading stdin: {e}");
                            return;
                        }
                    }
                }
            });
            std::thread::spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut lines = vec![first];
                    lines.extend(rx.try_iter().take(STDIN_BATCH - 1));
                    stdin_lines(&c, lines);
                }
                c.set_exit_when_idle(until_idle);
            });
        }
        {
            let c = client.clone();
            tokio::spawn(async move {
                wait_for_stop_signal().await;
                c.shutdown();
            });
        }
        let deadline = async {
            match r.timeout {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        let bounded = async {
            let run = client.run();
            tokio::pin!(run);
            tokio::select! {
                res = &mut run => res,
                _ = deadline => {
                    client.shutdown();
                    // Let the client settle what it can, then report the timeout.
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), &mut run).await {
                        eprintln!("tether: error while stopping: {e}");
                    }
                    Err(Error::Timeout(format!(
                        "not idle after {} s", r.timeout.unwrap_or_default()
                    )))
                }
            }
        };
        let result = print_events_while(&mut events, bounded).await;
        // What the run cost the battery: how often the connection loop woke up.
        print_json(&serde_json::json!({
            "event": "run:stats",
            "wakeups": client.wakeups(),
            "timer_wakeups": client.timer_wakeups(),
        }));
        result
    })
}

/// `run` over a store with several accounts: every enabled account's session side by side, each
/// event printed with its `account`. One account's final error ends that account only; the run
/// exits once every session has ended (with `--until-idle`, once each is idle), with the first
/// account error's exit code if one had one.
fn run_inbox(inbox: Inbox, r: RunArgs) -> Result<(), Error> {
    runtime()?.block_on(async move {
        let mut events = inbox.subscribe();
        {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                wait_for_stop_signal().await;
                inbox.shutdown();
            });
        }
        let deadline = async {
            match r.timeout {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        let bounded = async {
            let run = inbox.run(r.until_idle);
            tokio::pin!(run);
            tokio::select! {
                res = &mut run => res.map(Some),
                _ = deadline => {
                    inbox.shutdown();
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), &mut run).await {
                        eprintln!("tether: error while stopping: {e}");
                    }
                    Err(Error::Timeout(format!(
                        "not idle after {} s", r.timeout.unwrap_or_default()
                    )))
                }
            }
        };
        let ended = print_events_while(&mut events, bounded).await?;
        let mut first_error = None;
        for (jid, error) in ended.into_iter().flatten() {
            print_json(&serde_json::json!({
                "event": "account:ended", "account": jid,
                "error": error.as_ref().map(|e| e.to_string()),
            }));
            if first_error.is_none() {
                first_error = error;
            }
        }
        // The error went with its account's events too; the exit code says its class.
        first_error.map_or(Ok(()), Err)
    })
}
