//! Tether desktop: a Tauri 2 shell over `tether-core`. It holds the core's [`Inbox`] (every account
//! of the store, one session each, side by side); a command names its account and calls that
//! account's `Client`; every account's events are forwarded to the window as `tether://event`,
//! each with its `account`. No delivery rule lives here.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod secrets;

use std::path::PathBuf;

use serde::Serialize;
use tauri::{AppHandle, Emitter, Manager, State};
use tether_core::chat_state::ChatState;
use tether_core::contract::{CommandError, CommandErrorKind};
use tether_core::inbox::{AccountStatus, InboxConversation};
use tether_core::store::{Contact, Edit, MessageFilter, MessageRow, NewAccount, Room};
use tether_core::{Client, ClientConfig, Inbox};

/// The window's state: the store's accounts.
struct App {
    inbox: Inbox,
    /// Serialises sign-ins (two at once for one JID would race to the keyring).
    signing_in: tokio::sync::Mutex<()>,
}

/// Errors cross to the UI typed (`CommandError`, in the generated contract): a kind to branch on
/// and the core's message, which says what to do.
type CmdResult<T> = Result<T, CommandError>;

fn err(e: tether_core::Error) -> CommandError {
    e.into()
}

/// A failure of the shell itself (a poisoned lock, a lost thread).
fn internal(e: impl std::fmt::Display) -> CommandError {
    CommandError::new(CommandErrorKind::Internal, format!("internal error: {e}"))
}

/// Runs a call that touches the store or the keyring on a blocking thread: off the window's main
/// thread (a synchronous command runs there) and off the async runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> CmdResult<T> + Send + 'static,
) -> CmdResult<T> {
    tauri::async_runtime::spawn_blocking(f)
        .await
        .map_err(internal)?
}

impl App {
    /// The client of `account` (a bare JID of this store).
    fn client(&self, account: &str) -> CmdResult<Client> {
        if account.is_empty() {
            return Err(CommandError::new(
                CommandErrorKind::NotSignedIn,
                "no account yet: sign in first",
            ));
        }
        self.inbox.client(account).map_err(err)
    }
}

/// Who was signed in.
#[derive(Serialize)]
struct AccountInfo {
    jid: String,
    server: Option<String>,
}

/// Gives a client whose password is kept in the keyring its password and its token vault.
fn unlock(client: &Client) {
    if !client.account().password.is_empty() {
        return;
    }
    // If the keyring cannot be read, the client reports that it has no password and the window
    // shows it.
    client.set_secret_vault(std::sync::Arc::new(secrets::KeyringVault::new(
        &client.account().jid,
    )));
    match secrets::load(&client.account().jid) {
        Ok(password) => client.set_password(password),
        Err(e) => tracing::warn!("{e}"),
    }
}

/// Forwards every account's events to the window.
fn forward_events(app: &AppHandle, inbox: &Inbox) {
    let mut events = inbox.subscribe();
    let handle = app.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Err(e) = handle.emit("tether://event", &event) {
                        tracing::warn!("cannot reach the window: {e}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    // The UI reloads from the store, which has every state.
                    if let Err(e) = handle.emit("tether://lagged", n) {
                        tracing::warn!("cannot reach the window: {e}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// Every account of the store, with its connection state.
#[tauri::command]
async fn accounts(state: State<'_, App>) -> CmdResult<Vec<AccountStatus>> {
    let inbox = state.inbox.clone();
    blocking(move || inbox.accounts().map_err(err)).await
}

/// Enables or disables an account (a disabled one keeps its history and queue, and does not
/// connect).
#[tauri::command]
async fn set_account_enabled(
    state: State<'_, App>,
    account: String,
    enabled: bool,
) -> CmdResult<()> {
    let inbox = state.inbox.clone();
    if enabled {
        unlock(&state.client(&account)?);
    }
    inbox.set_enabled(&account, enabled).map_err(err)
}

/// Removes an account, its history and its password in the keyring.
#[tauri::command]
async fn remove_account(state: State<'_, App>, account: String) -> CmdResult<()> {
    state.inbox.remove_account(&account).await.map_err(err)?;
    secrets::forget(&account);
    Ok(())
}

/// Signs in to an account (the first, or one more beside the others): the password goes to the
/// OS keyring; without one, only with the user's consent (`allow_database`) into the owner-only
/// database. Without consent the error is `NoKeyring` and the UI asks. The new account's session
/// starts at once, beside the others'.
#[tauri::command]
async fn sign_in(
    state: State<'_, App>,
    jid: String,
    password: String,
    server: Option<String>,
    ca_file: Option<String>,
    allow_database: Option<bool>,
) -> CmdResult<AccountInfo> {
    let form = SignInForm {
        jid,
        password,
        server,
        ca_file,
        allow_database: allow_database.unwrap_or(false),
    };
    add_account(&state, form, None).await
}

/// Creates an account on its server (the core's in-band registration, with an invitation link
/// when given), then signs in to it as [`sign_in`] does. Where the password will be kept is
/// settled first, so that a `NoKeyring` question never comes after the server created the
/// account.
#[tauri::command]
async fn sign_up(
    state: State<'_, App>,
    jid: String,
    password: String,
    server: Option<String>,
    ca_file: Option<String>,
    invite: Option<String>,
    allow_database: Option<bool>,
) -> CmdResult<AccountInfo> {
    let form = SignInForm {
        jid,
        password,
        server,
        ca_file,
        allow_database: allow_database.unwrap_or(false),
    };
    add_account(&state, form, Some(invite.unwrap_or_default())).await
}

/// What the sign-in (and sign-up) form holds.
struct SignInForm {
    jid: String,
    password: String,
    server: Option<String>,
    ca_file: Option<String>,
    allow_database: bool,
}

/// Adds the account of `form` (first creating it on the server when `register` holds the
/// invitation link, empty for none), keeps its password, and starts its session.
async fn add_account(
    state: &App,
    form: SignInForm,
    register: Option<String>,
) -> CmdResult<AccountInfo> {
    let _one_at_a_time = state.signing_in.lock().await;
    let blank = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
    let new = NewAccount {
        jid: form.jid.trim().to_owned(),
        password: form.password.clone(),
        server: blank(form.server),
        ca_file: blank(form.ca_file),
        insecure_plaintext: false,
        direct_tls: false,
    };
    let inbox = state.inbox.clone();
    let (jid, password, allow) = (new.jid.clone(), form.password, form.allow_database);
    let stored = blocking(move || {
        if inbox.accounts().map_err(err)?.iter().any(|a| a.jid == jid) {
            return Err(CommandError::new(
                CommandErrorKind::AlreadySignedIn,
                format!("{jid} is signed in already"),
            ));
        }
        secrets::store(&jid, &password, allow)
    })
    .await?;
    if let Some(link) = register {
        let invite = Some(link)
            .filter(|l| !l.trim().is_empty())
            .map(|l| tether_core::register::Invite::parse(&l))
            .transpose()
            .map_err(|e| err(tether_core::Error::Usage(e)));
        let created = match invite {
            Ok(invite) => tether_core::connection::register::register(&new, invite.as_ref())
                .await
                .map_err(err),
            Err(e) => Err(e),
        };
        if let Err(e) = created {
            if stored == secrets::Stored::Keyring {
                secrets::forget(&new.jid);
            }
            return Err(e);
        }
    }
    let inbox = state.inbox.clone();
    let client = blocking(move || {
        let password = new.password.clone();
        let client = inbox
            .add_account(&NewAccount {
                password: match stored {
                    secrets::Stored::Keyring => String::new(),
                    secrets::Stored::Database => password.clone(),
                },
                ..new
            })
            .map_err(err)?;
        if stored == secrets::Stored::Keyring {
            client.set_secret_vault(std::sync::Arc::new(secrets::KeyringVault::new(
                &client.account().jid,
            )));
            client.set_password(password);
        }
        Ok(client)
    })
    .await?;
    let info = AccountInfo {
        jid: client.account().jid.clone(),
        server: client.account().server.clone(),
    };
    state.inbox.start(&info.jid).map_err(err)?;
    Ok(info)
}

/// The unified conversation list: every account's, the newest first.
#[tauri::command]
async fn conversations(state: State<'_, App>) -> CmdResult<Vec<InboxConversation>> {
    let inbox = state.inbox.clone();
    blocking(move || inbox.conversations().map_err(err)).await
}

#[tauri::command]
async fn page(
    state: State<'_, App>,
    account: String,
    peer: String,
    before: Option<i64>,
    limit: usize,
) -> CmdResult<Vec<MessageRow>> {
    let c = state.client(&account)?;
    blocking(move || c.page(&peer, before, limit).map_err(err)).await
}

/// Full-text search over every conversation (the core's rules: current text only, the words
/// never query syntax); the next page starts `before` the last hit's cursor.
#[tauri::command]
async fn search(
    state: State<'_, App>,
    account: String,
    text: String,
    before: Option<i64>,
    limit: usize,
) -> CmdResult<Vec<tether_core::store::SearchHit>> {
    let c = state.client(&account)?;
    blocking(move || c.search(&text, None, before, limit).map_err(err)).await
}

/// The blocklist (XEP-0191), with the user's wish and what the server said of each entry.
#[tauri::command]
async fn blocklist(
    state: State<'_, App>,
    account: String,
) -> CmdResult<Vec<tether_core::store::BlockEntry>> {
    let c = state.client(&account)?;
    blocking(move || c.blocklist().map_err(err)).await
}

/// Blocks (`block`) or unblocks a contact, a full JID or a domain; the core keeps the wish and
/// tells the server.
#[tauri::command]
async fn set_blocked(
    state: State<'_, App>,
    account: String,
    jid: String,
    block: bool,
) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || {
        if block {
            c.block(&jid)
        } else {
            c.unblock(&jid).map(drop)
        }
        .map_err(err)
    })
    .await
}

/// What `jid` (a contact, or this account's own bare JID) publishes of itself, as last heard
/// (our own shows the user's changes at once, told to the server or not); `None` when nothing is
/// known.
#[tauri::command]
async fn profile(
    state: State<'_, App>,
    account: String,
    jid: String,
) -> CmdResult<Option<tether_core::store::Profile>> {
    let c = state.client(&account)?;
    blocking(move || c.profile(&jid).map_err(err)).await
}

/// An avatar by the SHA-1 a profile or contact names, as a `data:<mime>;base64,…` URL the window
/// can show; `None` when its bytes are not stored.
#[tauri::command]
async fn avatar(state: State<'_, App>, account: String, sha1: String) -> CmdResult<Option<String>> {
    use base64::Engine as _;
    let c = state.client(&account)?;
    blocking(move || {
        Ok(c.avatar(&sha1).map_err(err)?.map(|(mime, data)| {
            format!(
                "data:{mime};base64,{}",
                base64::engine::general_purpose::STANDARD.encode(data)
            )
        }))
    })
    .await
}

/// Sets the account's own nickname (XEP-0172); `None` or empty removes it. The core checks it
/// and tells the server when online.
#[tauri::command]
async fn set_nick(state: State<'_, App>, account: String, nick: Option<String>) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || c.set_nick(nick.as_deref()).map_err(err)).await
}

/// Sets the account's own avatar (XEP-0084) from the image file at `path`; returns its SHA-1.
/// The core refuses what is not a PNG, JPEG, GIF or WebP, or too large, and says why.
#[tauri::command]
async fn set_avatar(state: State<'_, App>, account: String, path: String) -> CmdResult<String> {
    let c = state.client(&account)?;
    blocking(move || c.set_avatar_file(std::path::Path::new(&path)).map_err(err)).await
}

/// Sets the account's own avatar from an image the window read itself (the picker): the raw
/// bytes, with `account` in the request's headers; returns its SHA-1. The core checks the bytes
/// as [`set_avatar`] does.
#[tauri::command]
async fn set_avatar_data(
    state: State<'_, App>,
    request: tauri::ipc::Request<'_>,
) -> CmdResult<String> {
    let account = request
        .headers()
        .get("account")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| internal("missing header account"))
        .and_then(percent_decode)?;
    let data = request_bytes(&request)?;
    let c = state.client(&account)?;
    blocking(move || c.set_avatar(data).map_err(err)).await
}

/// Whether the server confirmed every change of the account's own profile.
#[tauri::command]
async fn profile_told(state: State<'_, App>, account: String) -> CmdResult<bool> {
    let c = state.client(&account)?;
    blocking(move || c.profile_told().map_err(err)).await
}

/// Removes the account's own avatar (told to the server when online).
#[tauri::command]
async fn clear_avatar(state: State<'_, App>, account: String) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || c.clear_avatar().map_err(err)).await
}

#[tauri::command]
async fn send(
    state: State<'_, App>,
    account: String,
    to: String,
    body: String,
) -> CmdResult<String> {
    let c = state.client(&account)?;
    blocking(move || c.send(&to, &body).map_err(err)).await
}

#[tauri::command]
async fn resend(state: State<'_, App>, account: String, ids: Vec<String>) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || c.resend(&ids).map_err(err)).await
}

#[tauri::command]
async fn discard(state: State<'_, App>, account: String, ids: Vec<String>) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || c.discard(&ids).map_err(err)).await
}

#[tauri::command]
async fn mark_read(state: State<'_, App>, account: String, peer: String) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || c.mark_read(&peer, None).map(drop).map_err(err)).await
}

#[tauri::command]
async fn join_room(
    state: State<'_, App>,
    account: String,
    room: String,
    nick: String,
) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || c.join_room(&room, &nick).map_err(err)).await
}

/// Leaves `room`: the core forgets it, tells the room, and retracts its bookmark (XEP-0402), so
/// the user's other devices leave it too. Refused when `room` is not one of this account's.
#[tauri::command]
async fn leave_room(state: State<'_, App>, account: String, room: String) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || c.leave_room(&room).map_err(err)).await
}

#[tauri::command]
async fn rooms(state: State<'_, App>, account: String) -> CmdResult<Vec<Room>> {
    let c = state.client(&account)?;
    blocking(move || c.rooms().map_err(err)).await
}

/// Invites someone to a room (XEP-0249), delivered as a message.
#[tauri::command]
async fn invite(
    state: State<'_, App>,
    account: String,
    room: String,
    to: String,
    reason: Option<String>,
) -> CmdResult<String> {
    let c = state.client(&account)?;
    blocking(move || c.invite(&room, &to, reason.as_deref()).map_err(err)).await
}

/// Who is in a room (XEP-0045), as the room last said.
#[tauri::command]
async fn occupants(
    state: State<'_, App>,
    account: String,
    room: String,
) -> CmdResult<Vec<tether_core::store::Occupant>> {
    let c = state.client(&account)?;
    blocking(move || c.occupants(&room).map_err(err)).await
}

#[tauri::command]
async fn contacts(state: State<'_, App>, account: String) -> CmdResult<Vec<Contact>> {
    let c = state.client(&account)?;
    blocking(move || c.contacts().map_err(err)).await
}

#[tauri::command]
async fn subscription_requests(state: State<'_, App>, account: String) -> CmdResult<Vec<String>> {
    let c = state.client(&account)?;
    blocking(move || c.subscription_requests().map_err(err)).await
}

#[tauri::command]
async fn answer_subscription(
    state: State<'_, App>,
    account: String,
    jid: String,
    accept: bool,
) -> CmdResult<()> {
    let c = state.client(&account)?;
    blocking(move || c.answer_subscription_request(&jid, accept).map_err(err)).await
}

#[tauri::command]
async fn correct(
    state: State<'_, App>,
    account: String,
    peer: String,
    id: String,
    body: String,
) -> CmdResult<String> {
    let c = state.client(&account)?;
    blocking(move || c.correct(&peer, &id, &body).map_err(err)).await
}

#[tauri::command]
async fn retract(
    state: State<'_, App>,
    account: String,
    peer: String,
    id: String,
) -> CmdResult<String> {
    let c = state.client(&account)?;
    blocking(move || c.retract(&peer, &id).map_err(err)).await
}

#[tauri::command]
async fn react(
    state: State<'_, App>,
    account: String,
    peer: String,
    id: String,
    emoji: Vec<String>,
) -> CmdResult<String> {
    let c = state.client(&account)?;
    blocking(move || c.react(&peer, &id, &emoji).map_err(err)).await
}

#[tauri::command]
async fn reply(
    state: State<'_, App>,
    account: String,
    peer: String,
    id: String,
    body: String,
) -> CmdResult<String> {
    let c = state.client(&account)?;
    blocking(move || c.reply(&peer, &id, &body).map_err(err)).await
}

#[tauri::command]
async fn edits(
    state: State<'_, App>,
    account: String,
    peer: String,
    id: String,
) -> CmdResult<Vec<Edit>> {
    let c = state.client(&account)?;
    blocking(move || c.edits(&peer, &id).map_err(err)).await
}

/// Every failed row of the conversation, corrections and reactions too (the page lists only the
/// messages themselves).
#[tauri::command]
async fn failed(
    state: State<'_, App>,
    account: String,
    peer: String,
) -> CmdResult<Vec<MessageRow>> {
    let c = state.client(&account)?;
    blocking(move || {
        c.messages(&MessageFilter {
            peer: Some(peer),
            state: Some(tether_core::State::Failed),
            direction: None,
        })
        .map_err(err)
    })
    .await
}

#[tauri::command]
async fn send_file(
    state: State<'_, App>,
    account: String,
    to: String,
    path: String,
) -> CmdResult<String> {
    let c = state.client(&account)?;
    blocking(move || c.send_file(&to, std::path::Path::new(&path)).map_err(err)).await
}

/// A file the window read itself (the attach button): the raw bytes, with `account`, `to` and
/// `name` in the request's headers. Written to a private temporary file, committed (copied into the
/// store), then the temporary file goes.
#[tauri::command]
async fn send_file_data(
    state: State<'_, App>,
    request: tauri::ipc::Request<'_>,
) -> CmdResult<String> {
    let header = |name: &str| -> CmdResult<String> {
        let v = request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| internal(format!("missing header {name}")))?;
        percent_decode(v)
    };
    let (account, to, name) = (header("account")?, header("to")?, header("name")?);
    let data = request_bytes(&request)?;
    let c = state.client(&account)?;
    blocking(move || {
        let dir = tempfile::tempdir().map_err(internal)?;
        let path = dir.path().join(tether_core::store::blobs::safe_name(&name));
        std::fs::write(&path, &data).map_err(internal)?;
        c.send_file(&to, &path).map_err(err)
    })
    .await
}

/// The bytes a command got raw (a file the window read): raw over the custom-protocol IPC; a
/// JSON array of bytes where the webview falls back to postMessage (WebKitGTK does).
fn request_bytes(request: &tauri::ipc::Request<'_>) -> CmdResult<Vec<u8>> {
    match request.body() {
        tauri::ipc::InvokeBody::Raw(data) => Ok(data.clone()),
        tauri::ipc::InvokeBody::Json(v) => serde_json::from_value(v.clone())
            .map_err(|e| internal(format!("the file's bytes are unreadable: {e}"))),
    }
}

fn percent_decode(s: &str) -> CmdResult<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(internal)
}

/// The bytes of a message's file that is here (image previews).
#[tauri::command]
async fn file_bytes(
    state: State<'_, App>,
    account: String,
    peer: String,
    id: String,
) -> CmdResult<tauri::ipc::Response> {
    let c = state.client(&account)?;
    blocking(move || {
        let path = local_file(&c, &peer, &id)?;
        let data = std::fs::read(path).map_err(internal)?;
        Ok(tauri::ipc::Response::new(data))
    })
    .await
}

/// Saves a message's file into the user's Downloads folder; returns where.
#[tauri::command]
async fn save_file(
    app: AppHandle,
    state: State<'_, App>,
    account: String,
    peer: String,
    id: String,
) -> CmdResult<String> {
    let c = state.client(&account)?;
    let downloads = app.path().download_dir().map_err(internal)?;
    blocking(move || {
        let path = local_file(&c, &peer, &id)?;
        let row = c.message(&id).map_err(err)?;
        let name = row.file.map(|f| f.name).unwrap_or_else(|| "file".into());
        std::fs::create_dir_all(&downloads).map_err(internal)?;
        let mut dest = downloads.join(&name);
        let mut n = 1;
        while dest.exists() {
            dest = downloads.join(format!("{n} {name}"));
            n += 1;
        }
        std::fs::copy(path, &dest).map_err(internal)?;
        Ok(dest.to_string_lossy().into_owned())
    })
    .await
}

fn local_file(c: &Client, peer: &str, id: &str) -> CmdResult<PathBuf> {
    let row = c.message(id).map_err(err)?;
    if row.peer != peer {
        return Err(internal(format!(
            "message {id} is not in the conversation with {peer}"
        )));
    }
    row.file
        .and_then(|f| f.local_path)
        .map(PathBuf::from)
        .ok_or_else(|| {
            CommandError::new(CommandErrorKind::Core, "the file is not on this device yet")
        })
}

#[tauri::command]
fn set_chat_state(
    state: State<'_, App>,
    account: String,
    peer: String,
    chat_state: ChatState,
) -> CmdResult<bool> {
    state
        .client(&account)?
        .set_chat_state(&peer, chat_state)
        .map_err(err)
}

#[tauri::command]
fn retry_now(state: State<'_, App>, account: String) -> CmdResult<()> {
    state.client(&account)?.network_changed();
    Ok(())
}

/// The database: `$TETHER_DB`, else `tether.db` in the app's data directory.
fn db_path(app: &AppHandle) -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Some(p) = std::env::var_os("TETHER_DB") {
        return Ok(PathBuf::from(p));
    }
    let dir = app.path().app_data_dir()?;
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join("tether.db"))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .setup(|app| {
            let handle = app.handle().clone();
            let inbox = Inbox::open(db_path(&handle)?, ClientConfig::default())?;
            forward_events(&handle, &inbox);
            // The accounts there are sign in by themselves, each in its own session.
            for account in inbox.accounts()? {
                unlock(&inbox.client(&account.jid)?);
                let (inbox, jid) = (inbox.clone(), account.jid);
                tauri::async_runtime::spawn(async move {
                    if let Err(e) = inbox.start(&jid) {
                        tracing::error!("{jid}: {e}");
                    }
                });
            }
            app.manage(App {
                inbox,
                signing_in: tokio::sync::Mutex::new(()),
            });
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            accounts,
            set_account_enabled,
            remove_account,
            sign_in,
            sign_up,
            conversations,
            page,
            search,
            blocklist,
            set_blocked,
            profile,
            avatar,
            set_nick,
            set_avatar,
            set_avatar_data,
            clear_avatar,
            profile_told,
            send,
            resend,
            discard,
            mark_read,
            join_room,
            leave_room,
            rooms,
            occupants,
            invite,
            contacts,
            subscription_requests,
            answer_subscription,
            correct,
            retract,
            react,
            reply,
            edits,
            failed,
            set_chat_state,
            send_file,
            send_file_data,
            file_bytes,
            save_file,
            retry_now
        ])
        .run(tauri::generate_context!())
        .unwrap_or_else(|e| {
            eprintln!("tether-desktop: {e}");
            std::process::exit(1);
        });
}
