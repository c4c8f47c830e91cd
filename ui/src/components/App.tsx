import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import {
  api,
  errorText,
  isCommandError,
  activeAccount,
  setActiveAccount,
  type AccountInfo,
  type AccountStatus,
  type BlockEntry,
  type Contact,
  type InboxConversation,
  type Occupant,
  type CoreEvent,
  type Message,
  type Room,
  type SearchHit,
} from "../api";
import { bannerText, failedIn, resendConfirmation, type Confirmation } from "../failed";
import { look, movesForward } from "../states";
import {
  QUICK_REACTIONS,
  blockOf,
  blockedText,
  consistentColor,
  dayLabel,
  displayName,
  latestOnly,
  meAction,
  humanSize,
  lastEditable,
  sentAt,
  startsDay,
  shownBody,
  toggledReactions,
  transferFraction,
  typingLine,
} from "../chat";
import type {
  ChatState,
  ConnectionEvent,
  Edit,
  MessageEvent,
  ReceivedEvent,
  SocialEvent,
  TransferEvent,
  UpdatedEvent,
} from "../generated/contract";
import { Avatar } from "./Avatar";
import { MessageList } from "./MessageList";
import { ProfileDialog } from "./ProfileDialog";

const PAGE = 50;

interface Connection {
  state: "connecting" | "online" | "offline";
  resumed?: boolean;
  reason?: string;
  retryAt?: number;
}

/** The account the view is in, and the conversation to open there. */
interface Place {
  account: string;
  peer: string | null;
}

export function App() {
  const [accounts, setAccounts] = useState<AccountStatus[] | undefined>(undefined);
  const [place, setPlace] = useState<Place | null>(null);
  const [adding, setAdding] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const refresh = useCallback(() => {
    api.accounts().then(setAccounts, (e) => setError(errorText(e)));
  }, []);
  useEffect(() => {
    refresh();
    // Each account's connection state and final error show in the account switcher.
    const un = api.onEvent((e) => {
      if (e.event === "connection" || e.event === "error" || e.event === "events:missed") refresh();
    });
    const unLagged = api.onLagged(refresh);
    return () => {
      void un.then((f) => f());
      void unLagged.then((f) => f());
    };
  }, [refresh]);
  if (accounts === undefined) return <div class="splash">{error ?? "Tether"}</div>;
  if (accounts.length === 0 || adding)
    return (
      <SignIn
        onDone={(a) => {
          setAdding(false);
          setPlace({ account: a.jid, peer: null });
          refresh();
        }}
        onCancel={accounts.length > 0 ? () => setAdding(false) : undefined}
      />
    );
  const here =
    place && accounts.some((a) => a.jid === place.account) ? place : { account: accounts[0].jid, peer: null };
  setActiveAccount(here.account);
  return (
    <Main
      key={here.account}
      account={here.account}
      initialPeer={here.peer}
      accounts={accounts}
      onSwitch={(account, peer) => setPlace({ account, peer })}
      onAdd={() => setAdding(true)}
      onAccountsChanged={refresh}
    />
  );
}

function SignIn({ onDone, onCancel }: { onDone: (a: AccountInfo) => void; onCancel?: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // Sign in to an account that exists, or create one on its server.
  const [creating, setCreating] = useState(false);
  // No keyring: the user decides whether the password may be kept in Tether's database.
  const [askStore, setAskStore] = useState<{ why: string; form: FormData } | null>(null);
  const attempt = async (f: FormData, allowDatabase: boolean) => {
    setBusy(true);
    setError(null);
    const [jid, password, server, ca] = ["jid", "password", "server", "ca"].map((k) => String(f.get(k) ?? ""));
    try {
      onDone(
        creating
          ? await api.signUp(jid, password, server, ca, String(f.get("invite") ?? ""), allowDatabase)
          : await api.signIn(jid, password, server, ca, allowDatabase),
      );
    } catch (err) {
      if (isCommandError(err, "no_keyring")) setAskStore({ why: err.message, form: f });
      else setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  const submit = (e: Event) => {
    e.preventDefault();
    void attempt(new FormData(e.target as HTMLFormElement), false);
  };
  return (
    <>
      <form class="signin" onSubmit={submit} data-mode={creating ? "create" : "sign-in"}>
        <h1>{creating ? "Create an account" : onCancel ? "Add an account" : "Sign in to Tether"}</h1>
        <div class="modes">
          <button type="button" class={creating ? "link" : "link active"} onClick={() => setCreating(false)}>
            I have an account
          </button>
          <button
            type="button"
            class={creating ? "link active" : "link"}
            data-testid="create-account"
            onClick={() => setCreating(true)}
          >
            Create a new account
          </button>
        </div>
        <label>
          Address <input name="jid" placeholder="you@example.org" required autoFocus />
        </label>
        <label>
          Password <input name="password" type="password" required />
        </label>
        {creating && (
          <label>
            Invitation link (if the server asks for one){" "}
            <input name="invite" placeholder="xmpp:example.org?register;preauth=…" />
          </label>
        )}
        <details>
          <summary>Server settings</summary>
          <label>
            Server (host:port) <input name="server" placeholder="found automatically" />
          </label>
          <label>
            CA certificate file <input name="ca" placeholder="the system's certificates" />
          </label>
        </details>
        {error && <p class="error">{error}</p>}
        <button type="submit" disabled={busy}>
          {busy ? (creating ? "Creating…" : "Signing in…") : creating ? "Create account" : "Sign in"}
        </button>
        {onCancel && (
          <button type="button" class="secondary" onClick={onCancel}>
            Cancel
          </button>
        )}
      </form>
      {askStore && (
        <div class="modal" role="dialog" aria-modal="true">
          <div class="card" data-testid="keyring-dialog">
            <h3>No keyring to keep your password</h3>
            <p>
              Tether keeps passwords in your system's keyring, and none is available here ({askStore.why}).
              Keep it in Tether's database instead? The file is readable only by your user account.
            </p>
            <div class="actions">
              <button class="secondary" onClick={() => setAskStore(null)}>
                Cancel
              </button>
              <button
                onClick={() => {
                  const f = askStore.form;
                  setAskStore(null);
                  void attempt(f, true);
                }}
              >
                Keep it in the database
              </button>
            </div>
          </div>
        </div>
      )}
    </>
  );
}

function ConnectionBar({ c, now }: { c: Connection; now: number }) {
  let text = "Connecting…";
  if (c.state === "online") text = c.resumed ? "Online (session resumed)" : "Online";
  if (c.state === "offline") {
    const secs = c.retryAt ? Math.max(0, Math.ceil((c.retryAt - now) / 1000)) : null;
    text = `Offline${c.reason ? `: ${c.reason}` : ""}${secs !== null ? ` · retrying in ${secs} s` : ""}`;
  }
  return (
    <div class={`connection ${c.state}`} data-testid="connection">
      <span class="dot" />
      <span class="text">{text}</span>
      {c.state === "offline" && (
        <button class="link" onClick={() => report(api.retryNow())}>
          Retry now
        </button>
      )}
    </div>
  );
}

/** The state an account's last connection event gives. */
function connectionOf(status: AccountStatus | undefined): Connection {
  const e = status?.connection;
  if (!status?.enabled) return { state: "offline", reason: "disabled" };
  if (!e || e.event !== "connection") return { state: "connecting" };
  const c = e as ConnectionEvent;
  return { state: c.state, resumed: c.resumed, reason: c.reason };
}

/** Every account, each with its connection state: the one the view is in is marked; a click
 * switches to another. The active account can be disabled, enabled again, or removed. */
function AccountSwitcher({
  accounts,
  active,
  onSwitch,
  onAdd,
  onChanged,
}: {
  accounts: AccountStatus[];
  active: string;
  onSwitch: (jid: string) => void;
  onAdd: () => void;
  onChanged: () => void;
}) {
  const [removing, setRemoving] = useState<string | null>(null);
  const [profiling, setProfiling] = useState(false);
  const me = accounts.find((a) => a.jid === active);
  return (
    <div class="accounts" data-testid="accounts">
      <ul>
        {accounts.map((a) => {
          const c = connectionOf(a);
          const state = a.stopped ? "stopped" : a.enabled ? c.state : "disabled";
          return (
            <li
              key={a.jid}
              class={`account ${a.jid === active ? "active" : ""} ${state}`}
              data-testid="account"
              data-state={state}
              title={a.stopped ?? c.reason ?? state}
              onClick={() => a.jid !== active && onSwitch(a.jid)}
            >
              <span class="dot" />
              <span class="jid">{a.jid}</span>
            </li>
          );
        })}
      </ul>
      <div class="account-actions">
        {me && (
          <button class="link" data-testid="profile-button" onClick={() => setProfiling(true)}>
            Profile
          </button>
        )}
        <button class="link" data-testid="add-account" onClick={onAdd}>
          + Add account
        </button>
        {me && (
          <button
            class="link"
            data-testid="toggle-account"
            onClick={() => report(api.setAccountEnabled(me.jid, !me.enabled).then(onChanged))}
          >
            {me.enabled ? "Disable" : "Enable"}
          </button>
        )}
        {me && (
          <button class="link" data-testid="remove-account" onClick={() => setRemoving(me.jid)}>
            Remove
          </button>
        )}
      </div>
      {profiling && me && <ProfileDialog account={me.jid} onClose={() => setProfiling(false)} />}
      {removing && (
        <div class="modal" role="dialog" aria-modal="true">
          <div class="card" data-testid="remove-dialog">
            <h3>Remove {removing}?</h3>
            <p>Its messages and files on this computer go too. The account on the server stays.</p>
            <div class="actions">
              <button class="secondary" onClick={() => setRemoving(null)}>
                Cancel
              </button>
              <button
                onClick={() => {
                  const jid = removing;
                  setRemoving(null);
                  report(api.removeAccount(jid).then(onChanged));
                }}
              >
                Remove
              </button>
            </div>
          </div>
        </div>
      )}
    </div>
  );
}

interface MainProps {
  account: string;
  initialPeer: string | null;
  accounts: AccountStatus[];
  onSwitch: (account: string, peer: string | null) => void;
  onAdd: () => void;
  onAccountsChanged: () => void;
}

function Main({ account, initialPeer, accounts, onSwitch, onAdd, onAccountsChanged }: MainProps) {
  const status = accounts.find((a) => a.jid === account);
  const fatal = status?.stopped ?? null;
  const several = accounts.length > 1;
  const [conversations, setConversations] = useState<InboxConversation[]>([]);
  // Every account's roster, for the names in the unified list (this account's is `contacts`).
  const [rosters, setRosters] = useState<Record<string, Contact[]>>({});
  const [peer, setPeer] = useState<string | null>(initialPeer);
  const [messages, setMessages] = useState<Message[]>([]);
  const [hasOlder, setHasOlder] = useState(false);
  const [conn, setConn] = useState<Connection>(() => connectionOf(status));
  const [confirm, setConfirm] = useState<(Confirmation & { ids: string[] }) | null>(null);
  const [now, setNow] = useState(Date.now());
  const [draftTo, setDraftTo] = useState("");
  const [contacts, setContacts] = useState<Contact[]>([]);
  const [rooms, setRooms] = useState<Room[]>([]);
  const [requests, setRequests] = useState<string[]>([]);
  const [blocked, setBlocked] = useState<BlockEntry[]>([]);
  const [joining, setJoining] = useState(false);
  // The room the user is asked to confirm leaving, and why leaving it failed (if it did).
  const [leaving, setLeaving] = useState<{ room: string; error: string | null } | null>(null);
  const [failedRows, setFailedRows] = useState<Message[]>([]);
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<Message | null>(null);
  const [history, setHistory] = useState<Edit[] | null>(null);
  const [typing, setTyping] = useState<Record<string, ChatState>>({});
  // Who is in the open room (XEP-0045), as the room last said.
  const [occupants, setOccupants] = useState<Occupant[]>([]);
  // Bytes moved per message id, from `file:progress` events (the store keeps the final state).
  const [progress, setProgress] = useState<Record<string, number>>({});
  // Search: the words, the hits (or why the core refused the words), and the hit being shown.
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<SearchHit[] | string | null>(null);
  // While a search result is shown, the conversation stays on the page that ends with it.
  const [focus, setFocus] = useState<{ peer: string; seq: number } | null>(null);
  const focusRef = useRef<{ peer: string; seq: number } | null>(null);
  focusRef.current = focus;
  const peerRef = useRef<string | null>(null);
  peerRef.current = peer;

  // Each kind of reload shows only its newest answer (see `latestOnly`).
  const latestList = useRef(latestOnly()).current;
  const latestContacts = useRef(latestOnly()).current;
  const latestPage = useRef(latestOnly()).current;
  const refreshList = useCallback(() => {
    latestList(api.conversations(), setConversations).catch(console.error);
  }, [latestList]);
  // The other accounts' rosters, for their rows' names (refreshed when the accounts change).
  const accountList = accounts.map((a) => a.jid).join(" ");
  useEffect(() => {
    for (const jid of accountList.split(" ").filter((j) => j && j !== account)) {
      api.contactsOf(jid).then((list) => setRosters((r) => ({ ...r, [jid]: list })), console.error);
    }
  }, [accountList, account]);
  const rosterOf = (owner: string) => (owner === account ? contacts : (rosters[owner] ?? []));
  const nameIn = (owner: string, jid: string) => displayName(rosterOf(owner), jid);
  // A contact's avatar (its SHA-1), as `owner`'s roster has it.
  const avatarIn = (owner: string, jid: string) => rosterOf(owner).find((c) => c.jid === jid)?.avatar ?? null;
  const refreshPeople = useCallback(() => {
    latestContacts(api.contacts(), setContacts).catch(console.error);
    api.rooms().then(setRooms, console.error);
    api.subscriptionRequests().then(setRequests, console.error);
    api.blocklist().then(setBlocked, console.error);
  }, [latestContacts]);
  const refreshOccupants = useCallback((room: string) => {
    api.occupants(room).then((list) => peerRef.current === room && setOccupants(list), console.error);
  }, []);
  const refreshFailed = useCallback(async (p: string) => {
    const rows = await api.failed(p);
    if (peerRef.current === p) setFailedRows(rows);
  }, []);
  const reload = useCallback(
    async (p: string) => {
      const f = focusRef.current;
      const anchored = f && f.peer === p ? f.seq + 1 : null;
      await latestPage(api.page(p, anchored, PAGE), (page) => {
        if (peerRef.current !== p) return;
        setMessages(page);
        setHasOlder(page.length === PAGE);
        void refreshFailed(p);
      });
    },
    [refreshFailed, latestPage],
  );

  useEffect(() => {
    refreshList();
    const tick = setInterval(() => setNow(Date.now()), 1000);
    const onConnection = (e: ConnectionEvent) =>
      setConn({
        state: e.state,
        resumed: e.resumed,
        reason: e.reason,
        retryAt: typeof e.retry_in_ms === "number" ? Date.now() + e.retry_in_ms : undefined,
      });
    // Events before this window subscribed are gone; the core remembers the connection state.
    const reloadConnection = () =>
      api.accounts().then((list) => setConn(connectionOf(list.find((a) => a.jid === account))), console.error);
    // The window fell behind the core's events (some were dropped, between the core and the
    // window or inside the core's inbox): everything it shows is reloaded from the store, which
    // has every state.
    const reloadAll = () => {
      refreshList();
      refreshPeople();
      void reloadConnection();
      const current = peerRef.current;
      if (current) void reload(current);
    };
    const un = api.onEvent((e: CoreEvent) => {
      if (e.event === "events:missed") {
        reloadAll();
        return;
      }
      if (e.account !== account) {
        // Another account's: its conversations are in the list, and what arrives is told.
        if (e.event === "message:received") {
          const r = e as ReceivedEvent;
          notify(r.from, r.body);
        }
        if (e.event.startsWith("message:")) refreshList();
        // A contact of that account changed its avatar or nickname: its rows show the new ones.
        if (e.event === "profile") {
          const owner = e.account;
          api.contactsOf(owner).then((list) => setRosters((r) => ({ ...r, [owner]: list })), console.error);
        }
        return;
      }
      if (e.event === "connection") {
        onConnection(e as ConnectionEvent);
        return;
      }
      if (["roster", "presence", "subscription:request", "room:joined", "room:rejoining", "room:bookmark", "blocking", "profile"].includes(e.event)) {
        refreshPeople();
        const room = peerRef.current;
        if (room && (e.event === "presence" || e.event.startsWith("room:"))) refreshOccupants(room);
        return;
      }
      if (e.event === "chat:state") {
        const c = e as Extract<SocialEvent, { event: "chat:state" }>;
        setTyping((t) => ({ ...t, [c.from]: c.state }));
        return;
      }
      if (e.event.startsWith("file:")) {
        const t = e as TransferEvent;
        if (t.id && e.event === "file:progress") {
          const id = t.id;
          document.body.dataset.progressEvents = String(Number(document.body.dataset.progressEvents ?? 0) + 1);
          setProgress((p) => ({ ...p, [id]: t.done }));
        } else if (peerRef.current) {
          void reload(peerRef.current);
        }
        return;
      }
      if (e.event === "message:updated") {
        const u = e as UpdatedEvent;
        if (peerRef.current === u.peer) void reload(u.peer);
        refreshList();
        return;
      }
      if (e.event.startsWith("message:")) {
        const current = peerRef.current;
        if (e.event === "message:received") {
          const r = e as ReceivedEvent;
          // A message from them ends their typing.
          setTyping((t) => ({ ...t, [r.from]: "active" }));
          notify(r.from, r.body);
          if (current && (r.from === current || r.room === current)) {
            void reload(current);
            // Read while the conversation is open in front of the user: tell the sender.
            if (document.hasFocus()) report(api.markRead(current));
          }
        } else {
          const m = e as MessageEvent;
          // Only forward: a late event (a receipt that overtook the ack, then the ack) never
          // moves a message back (the core's rule, generated into the contract).
          setMessages((ms) =>
            ms.map((row) =>
              row.id === m.id && movesForward(row.state, m.state)
                ? { ...row, state: m.state, error: m.error ?? null }
                : row,
            ),
          );
          if (current) void refreshFailed(current);
        }
        refreshList();
      }
    });
    const unLagged = api.onLagged(reloadAll);
    return () => {
      clearInterval(tick);
      void un.then((f) => f());
      void unLagged.then((f) => f());
    };
  }, [account, refreshList, refreshPeople, reload, refreshFailed, refreshOccupants]);

  useEffect(() => refreshPeople(), [refreshPeople]);

  // Files dropped on the window go to the open conversation.
  useEffect(() => {
    let un: (() => void) | undefined;
    import("@tauri-apps/api/webview")
      .then(({ getCurrentWebview }) =>
        getCurrentWebview().onDragDropEvent((e) => {
          const to = peerRef.current;
          if (e.payload.type !== "drop" || !to) return;
          for (const path of e.payload.paths) report(api.sendFile(to, path).then(() => reload(to)));
        }),
      )
      .then((f) => (un = f))
      .catch((e) => console.error("no drag and drop", e));
    return () => un?.();
  }, [reload]);

  useEffect(() => {
    setReplyTo(null);
    setEditing(null);
    if (focusRef.current && focusRef.current.peer !== peer) setFocus(null);
    setOccupants([]);
    if (!peer) return;
    refreshOccupants(peer);
    void reload(peer);
    report(api.markRead(peer).then(refreshList));
  }, [peer, reload, refreshList, refreshOccupants]);

  const loadOlder = async (): Promise<number> => {
    if (!peer || messages.length === 0) return 0;
    const older = await api.page(peer, messages[0].seq, PAGE);
    setMessages((ms) => [...older, ...ms]);
    setHasOlder(older.length === PAGE);
    return older.length;
  };

  // The words as they are typed: the core answers (it quotes them, so nothing is query syntax);
  // a refusal (too long, too many words) is shown as the core says it.
  useEffect(() => {
    if (query.trim() === "") {
      setHits(null);
      return;
    }
    let current = true;
    const t = setTimeout(() => {
      api.search(query, null, PAGE).then(
        (h) => current && setHits(h),
        (e) => current && setHits(errorText(e)),
      );
    }, 150);
    return () => {
      current = false;
      clearTimeout(t);
    };
  }, [query]);

  // A hit opens its conversation on the page that ends with it, marked.
  const openHit = (h: SearchHit) => {
    const f = { peer: h.message.peer, seq: h.message.seq };
    focusRef.current = f;
    setFocus(f);
    if (peer === f.peer) void reload(f.peer);
    else setPeer(f.peer);
  };
  const backToNewest = () => {
    focusRef.current = null;
    setFocus(null);
    if (peer) void reload(peer);
  };

  const askResend = (ms: Message[]) =>
    setConfirm({ ...resendConfirmation(ms, Date.now()), ids: ms.map((m) => m.id) });
  // Every failed row of the conversation, corrections and reactions included.
  const failed = failedIn(failedRows);
  const banner = bannerText(failed.length);

  const send = async (body: string) => {
    const to = peer ?? draftTo.trim();
    if (!to || !body.trim()) return;
    if (editing && peer) {
      await api.correct(peer, editing.id, body);
      setEditing(null);
    } else if (replyTo && peer) {
      await api.reply(peer, replyTo.id, body);
      setReplyTo(null);
    } else {
      await api.send(to, body);
    }
    if (!peer) setPeer(to);
    else void reload(to);
    refreshList();
  };
  const attach = async (file: File) => {
    const to = peer ?? draftTo.trim();
    if (!to) return;
    await api.sendFileData(to, file);
    if (!peer) setPeer(to);
    else void reload(to);
    refreshList();
  };
  const typed = () => {
    if (peer) api.setChatState(peer, "composing").catch(console.error);
  };
  const act = (p: Promise<unknown>) =>
    report(
      p.then(() => {
        if (peer) void reload(peer);
      }),
    );

  return (
    <div class="main">
      <aside>
        <header>
          <AccountSwitcher
            accounts={accounts}
            active={account}
            onSwitch={(jid) => onSwitch(jid, null)}
            onAdd={onAdd}
            onChanged={onAccountsChanged}
          />
          <ConnectionBar c={conn} now={now} />
        </header>
        <input
          class="search"
          type="search"
          placeholder="Search messages"
          data-testid="search"
          value={query}
          onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
        />
        {typeof hits === "string" && (
          <div class="search-error" data-testid="search-error">
            {hits}
          </div>
        )}
        {Array.isArray(hits) && (
          <ul class="search-results" data-testid="search-results">
            {hits.length === 0 && <li class="hint">No message has these words</li>}
            {hits.map((h) => (
              <li key={h.cursor} data-testid="search-hit" onClick={() => openHit(h)}>
                <div class="row">
                  <span class="peer">{h.message.peer}</span>
                </div>
                <div class="last">
                  {h.message.direction === "out" ? "You: " : ""}
                  {h.message.body}
                </div>
              </li>
            ))}
          </ul>
        )}
        <button class="new" onClick={() => setPeer(null)}>
          New chat
        </button>
        <ul class="conversations">
          {conversations.map((c) => (
            <li
              key={`${c.account} ${c.peer}`}
              class={c.account === account && c.peer === peer ? "active" : ""}
              data-testid="conversation"
              data-account={c.account}
              onClick={() => (c.account === account ? setPeer(c.peer) : onSwitch(c.account, c.peer))}
            >
              <Avatar
                account={c.account}
                jid={c.peer}
                name={c.kind === "groupchat" ? c.peer : nameIn(c.account, c.peer)}
                sha1={c.kind === "groupchat" ? null : avatarIn(c.account, c.peer)}
                size={36}
              />
              <div class="summary">
                <div class="row">
                  <span class="peer" title={c.peer}>
                    {c.kind === "groupchat" ? `# ${c.peer}` : nameIn(c.account, c.peer)}
                  </span>
                  {several && (
                    <span class="via" title={`via ${c.account}`} style={{ color: consistentColor(c.account) }}>
                      {c.account.split("@")[0]}
                    </span>
                  )}
                  {c.unread > 0 && <span class="badge">{c.unread}</span>}
                  {c.failed > 0 && <span class="badge problem">{c.failed} ⚠</span>}
                </div>
                <div class="last">
                  {meAction(c.last_body) !== null
                    ? `* ${c.last_outgoing ? "You" : c.kind === "groupchat" ? c.peer : nameIn(c.account, c.peer)} ${meAction(c.last_body)}`
                    : `${c.last_outgoing ? "You: " : ""}${c.last_body}`}
                </div>
              </div>
            </li>
          ))}
        </ul>
        {requests.map((jid) => (
          <div class="request" key={jid}>
            <div>
              <strong>{jid}</strong> wants to see when you are online.
            </div>
            <div class="actions">
              <button onClick={() => api.answerSubscription(jid, true).then(refreshPeople)}>Accept</button>
              <button class="secondary" onClick={() => api.answerSubscription(jid, false).then(refreshPeople)}>
                Deny
              </button>
            </div>
          </div>
        ))}
        <h4>Rooms</h4>
        <ul class="people">
          {rooms.map((r) => (
            <li key={r.jid} onClick={() => setPeer(r.jid)} class={r.jid === peer ? "active" : ""}>
              <span class={`dot ${r.joined ? "on" : ""}`} /># {r.jid}
            </li>
          ))}
        </ul>
        {joining ? (
          <form
            class="join"
            onSubmit={(e) => {
              e.preventDefault();
              const f = new FormData(e.target as HTMLFormElement);
              const room = String(f.get("room"));
              api
                .joinRoom(room, String(f.get("nick")))
                .then(() => {
                  setJoining(false);
                  refreshPeople();
                  setPeer(room);
                })
                .catch((err) => alert(errorText(err)));
            }}
          >
            <input name="room" placeholder="room@conference.example.org" required />
            <input name="nick" placeholder="Your nickname" value={account.split("@")[0]} required />
            <button type="submit">Join</button>
          </form>
        ) : (
          <button class="link join-link" onClick={() => setJoining(true)}>
            + Join a room
          </button>
        )}
        {blocked.some((b) => b.want === "block") && (
          <>
            <h4>Blocked</h4>
            <ul class="people blocked" data-testid="blocked-list">
              {blocked
                .filter((b) => b.want === "block")
                .map((b) => (
                  <li key={b.jid} title={b.error ?? b.state}>
                    {b.jid}
                    {b.state !== "confirmed" && <span class="hint"> ({b.state})</span>}
                    <button class="link" onClick={() => report(api.setBlocked(b.jid, false).then(refreshPeople))}>
                      Unblock
                    </button>
                  </li>
                ))}
            </ul>
          </>
        )}
        <h4>Contacts</h4>
        <ul class="people">
          {contacts.map((c) => (
            <li key={c.jid} onClick={() => setPeer(c.jid)} class={c.jid === peer ? "active" : ""}>
              <span class={`dot ${c.presence === "available" ? "on" : ""}`} />
              <Avatar account={account} jid={c.jid} name={displayName(contacts, c.jid)} sha1={c.avatar} size={24} />
              {displayName(contacts, c.jid)}
              {c.ask && <span class="hint"> (waiting for approval)</span>}
            </li>
          ))}
        </ul>
      </aside>
      <section class="conversation">
        {fatal && <div class="fatal">{fatal}</div>}
        {peer ? (
          <h2 title={peer}>
            {!rooms.some((r) => r.jid === peer) && (
              <Avatar account={account} jid={peer} name={displayName(contacts, peer)} sha1={avatarIn(account, peer)} size={32} />
            )}
            {rooms.some((r) => r.jid === peer) ? peer : displayName(contacts, peer)}
            {!rooms.some((r) => r.jid === peer) && !blockOf(blocked, peer) && (
              <button
                class="link block-button"
                data-testid="block"
                onClick={() => report(api.setBlocked(peer, true).then(refreshPeople))}
              >
                Block
              </button>
            )}
            {rooms.some((r) => r.jid === peer) && (
              <button
                class="link leave-button"
                data-testid="leave-room"
                onClick={() => setLeaving({ room: peer, error: null })}
              >
                Leave
              </button>
            )}
          </h2>
        ) : (
          <div class="start">
            <h2>New chat</h2>
            <input
              placeholder="someone@example.org or room@conference.example.org"
              value={draftTo}
              onInput={(e) => setDraftTo((e.target as HTMLInputElement).value)}
            />
          </div>
        )}
        {peer && rooms.some((r) => r.jid === peer) && (
          <div class="occupants" data-testid="occupants">
            <form
              class="invite-form"
              onSubmit={(e) => {
                e.preventDefault();
                const input = (e.target as HTMLFormElement).elements.namedItem("to") as HTMLInputElement;
                const to = input.value.trim();
                if (!to || !peer) return;
                report(api.invite(peer, to, null).then(() => (input.value = "")));
              }}
            >
              <input name="to" placeholder="Invite someone@example.org" data-testid="invite-to" />
              <button class="link" type="submit">
                Invite
              </button>
            </form>
            <span class="hint">In the room:</span>
            {occupants.map((o) => (
              <span
                key={o.nick}
                class="occupant"
                data-testid="occupant"
                title={[o.jid, o.role, o.affiliation !== "none" ? o.affiliation : null].filter(Boolean).join(" · ")}
                style={{ color: consistentColor(o.nick) }}
              >
                {o.nick}
              </span>
            ))}
          </div>
        )}
        {blockOf(blocked, peer) && (
          <div class="banner" data-testid="blocked-banner" data-state={blockOf(blocked, peer)?.state}>
            <span>{blockedText(blockOf(blocked, peer)!)}</span>
            <button onClick={() => peer && report(api.setBlocked(peer, false).then(refreshPeople))}>Unblock</button>
          </div>
        )}
        {focus && focus.peer === peer && (
          <div class="banner found-banner" data-testid="found-banner">
            <span>A search result: newer messages are not shown.</span>
            <button onClick={backToNewest}>Back to the newest</button>
          </div>
        )}
        {banner && (
          <div class="banner" data-testid="failed-banner">
            <span>{banner}</span>
            <button onClick={() => askResend(failed)}>Resend all</button>
            <button class="secondary" onClick={() => report(api.discard(failed.map((m) => m.id)))}>
              Discard all
            </button>
          </div>
        )}
        <MessageList
          messages={messages}
          hasOlder={hasOlder}
          loadOlder={loadOlder}
          row={(m, prev) => (
            <>
              {startsDay(m, prev) && (
                <div class="day" data-testid="day">
                  {dayLabel(sentAt(m), now)}
                </div>
              )}
            <Bubble
              m={m}
              peer={peer}
              actor={m.direction === "out" ? account.split("@")[0] : (m.from_nick ?? displayName(contacts, m.peer))}
              found={!!focus && focus.peer === peer && focus.seq === m.seq}
              moved={progress[m.id]}
              onResend={() => askResend([m])}
              onReply={() => {
                setEditing(null);
                setReplyTo(m);
              }}
              onEdit={() => {
                setReplyTo(null);
                setEditing(m);
              }}
              onRetract={() => peer && act(api.retract(peer, m.id))}
              onReact={(emoji) => peer && act(api.react(peer, m.id, toggledReactions(m.reactions, emoji)))}
              onHistory={() => peer && report(api.edits(peer, m.id).then(setHistory))}
            />
            </>
          )}
        />
        {typingLine(typing, peer) && (
          <div class="typing" data-testid="typing">
            {typingLine(typing, peer)}
          </div>
        )}
        {(replyTo || editing) && (
          <div class="composing-context" data-testid={replyTo ? "replying" : "editing"}>
            <span>
              {replyTo ? `Replying to: ${shownBody(replyTo)}` : `Editing: ${editing ? shownBody(editing) : ""}`}
            </span>
            <button
              class="link"
              onClick={() => {
                setReplyTo(null);
                setEditing(null);
              }}
            >
              Cancel
            </button>
          </div>
        )}
        <Composer
          blocked={!!blockOf(blocked, peer)}
          onSend={send}
          onAttach={attach}
          onTyped={typed}
          editing={editing}
          onEditLast={() => {
            const m = lastEditable(messages);
            if (m) {
              setReplyTo(null);
              setEditing(m);
            }
          }}
        />
      </section>
      {history && (
        <div class="modal" role="dialog" aria-modal="true">
          <div class="card" data-testid="edit-history">
            <h3>Edit history</h3>
            <ol>
              {history.map((e, i) => (
                <li key={i}>
                  <time>{new Date(e.at).toLocaleString()}</time> {e.body}
                </li>
              ))}
            </ol>
            <div class="actions">
              <button onClick={() => setHistory(null)}>Close</button>
            </div>
          </div>
        </div>
      )}
      {leaving && (
        <div class="modal" role="dialog" aria-modal="true">
          <div class="card" data-testid="leave-dialog">
            <h3>Leave {leaving.room}?</h3>
            <p>
              You leave it on your other devices too. Its messages stay on this computer; you can join it
              again later.
            </p>
            {leaving.error && (
              <p class="error" data-testid="leave-error">
                {leaving.error}
              </p>
            )}
            <div class="actions">
              <button class="secondary" onClick={() => setLeaving(null)}>
                Cancel
              </button>
              <button
                onClick={() => {
                  const room = leaving.room;
                  api.leaveRoom(room).then(
                    () => {
                      setLeaving(null);
                      if (peerRef.current === room) setPeer(null);
                      refreshPeople();
                      refreshList();
                    },
                    (e) => setLeaving({ room, error: errorText(e) }),
                  );
                }}
              >
                Leave
              </button>
            </div>
          </div>
        </div>
      )}
      {confirm && (
        <div class="modal" role="dialog" aria-modal="true">
          <div class="card">
            <h3>{confirm.title}</h3>
            <p>{confirm.body}</p>
            <div class="actions">
              <button class="secondary" onClick={() => setConfirm(null)}>
                Cancel
              </button>
              <button
                onClick={() =>
                  report(
                    api.resend(confirm.ids).then(() => {
                      setConfirm(null);
                      if (peer) void reload(peer);
                    }),
                  )
                }
              >
                {confirm.confirm}
              </button>
            </div>
          </div>
        </div>
      )}
    </div>
  );
}

interface BubbleProps {
  m: Message;
  peer: string | null;
  /** Who wrote it, as shown (for a `/me` action). */
  actor: string;
  /** The search result being shown. */
  found?: boolean;
  /** Bytes moved so far, from progress events. */
  moved?: number;
  onResend: () => void;
  onReply: () => void;
  onEdit: () => void;
  onRetract: () => void;
  onReact: (emoji: string) => void;
  onHistory: () => void;
}

function Bubble({
  m,
  peer,
  actor,
  found,
  moved,
  onResend,
  onReply,
  onEdit,
  onRetract,
  onReact,
  onHistory,
}: BubbleProps) {
  const l = look(m.state);
  const mine = m.direction === "out";
  const [picking, setPicking] = useState(false);
  return (
    <div
      class={`bubble ${mine ? "mine" : "theirs"} ${l.tone} ${m.retracted ? "retracted" : ""} ${found ? "found" : ""}`}
      data-state={m.state}
      data-id={m.id}
      data-found={found ? "true" : undefined}
    >
      {m.from_nick && !mine && (
        // XEP-0392: the same colour for this nick in every client that implements it.
        <div class="nick" style={{ color: consistentColor(m.from_nick) }}>
          {m.from_nick}
        </div>
      )}
      {m.reply_to && (
        <blockquote class="quote" data-testid="quote">
          {m.reply_to.body ?? "This message was retracted"}
        </blockquote>
      )}
      {m.file && !m.retracted ? (
        <FileCard m={m} peer={peer} moved={moved} />
      ) : !m.retracted && meAction(shownBody(m)) !== null ? (
        // XEP-0245: "/me waves" is shown as an action of its sender.
        <div class="body me" data-me="true">
          * {actor} {meAction(shownBody(m))}
        </div>
      ) : (
        <div class="body">{shownBody(m)}</div>
      )}
      {m.invite && !m.retracted && (
        // XEP-0249: an invitation to a room.
        <div class="invite" data-testid="invite" data-room={m.invite}>
          <span>Invitation to # {m.invite}</span>
          {!mine && (
            <button
              class="link"
              data-testid="join-invite"
              onClick={() => report(api.joinRoom(m.invite!, activeAccount().split("@")[0]))}
            >
              Join
            </button>
          )}
        </div>
      )}
      {m.reactions.length > 0 && (
        <div class="reactions">
          {m.reactions.map((r) => (
            <button
              key={r.emoji}
              class={`reaction ${r.mine ? "mine" : ""}`}
              data-emoji={r.emoji}
              onClick={() => onReact(r.emoji)}
            >
              {r.emoji} {r.count}
            </button>
          ))}
        </div>
      )}
      <div class="meta">
        {m.edited && !m.retracted && (
          <button class="link edited" title="Show every version" onClick={onHistory}>
            edited
          </button>
        )}
        <time dateTime={new Date(sentAt(m)).toISOString()}>
          {new Date(sentAt(m)).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}
        </time>
        {mine && (
          <span class="state" title={m.error ? `${l.tooltip}\n${m.error}` : l.tooltip} aria-label={l.label}>
            {l.icon}
          </span>
        )}
      </div>
      {!m.retracted && (
        <div class="tools">
          <button class="link" data-action="reply" title="Reply" onClick={onReply}>
            ↩
          </button>
          <button class="link" data-action="react" title="React" onClick={() => setPicking(!picking)}>
            ☺
          </button>
          {mine && (
            <>
              <button class="link" data-action="edit" title="Edit" onClick={onEdit}>
                ✎
              </button>
              <button class="link" data-action="retract" title="Retract" onClick={onRetract}>
                ⌫
              </button>
            </>
          )}
        </div>
      )}
      {picking && (
        <div class="picker" data-testid="picker">
          {QUICK_REACTIONS.map((e) => (
            <button
              key={e}
              class="link"
              data-emoji={e}
              onClick={() => {
                setPicking(false);
                onReact(e);
              }}
            >
              {e}
            </button>
          ))}
        </div>
      )}
      {mine && m.state === "failed" && (
        <div class="fail-actions">
          <button onClick={onResend}>Retry</button>
          <button class="secondary" onClick={() => report(api.discard([m.id]))}>
            Discard
          </button>
        </div>
      )}
    </div>
  );
}

/** A message's file: name, size, a bar while it moves, a preview of an image that is here, Save. */
function FileCard({ m, peer, moved }: { m: Message; peer: string | null; moved?: number }) {
  const f = m.file!;
  const [preview, setPreview] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const image = (f.media_type ?? "").startsWith("image/") && f.local_path !== null;
  useEffect(() => {
    if (!image || !peer) return;
    let url: string | null = null;
    api
      .fileBytes(peer, m.id)
      .then((bytes) => {
        url = URL.createObjectURL(new Blob([bytes as BlobPart], { type: f.media_type ?? "image/*" }));
        setPreview(url);
      })
      .catch(console.error);
    return () => {
      if (url) URL.revokeObjectURL(url);
    };
  }, [image, peer, m.id, f.local_path]);
  const fraction = transferFraction(f.transfer, moved ?? f.done_bytes, f.size);
  return (
    <div class="file" data-testid="file" data-transfer={f.transfer}>
      {preview && <img class="preview" src={preview} alt={f.name} />}
      <div class="file-name body">{f.name}</div>
      <div class="file-meta">
        {humanSize(f.size)}
        {f.transfer === "failed" && f.error && <span class="error"> · {f.error}</span>}
      </div>
      {fraction !== null && (
        <progress data-testid="progress" max={1} value={fraction}>
          {Math.round(fraction * 100)}%
        </progress>
      )}
      {f.local_path && peer && (
        <button
          class="link"
          title={saved ?? "Save to Downloads"}
          onClick={() => report(api.saveFile(peer, m.id).then(setSaved))}
        >
          {saved ? "Saved" : "Save"}
        </button>
      )}
    </div>
  );
}

interface ComposerProps {
  onSend: (body: string) => Promise<void>;
  onAttach: (file: File) => Promise<void>;
  onTyped: () => void;
  editing: Message | null;
  onEditLast: () => void;
  /** The conversation's contact is blocked: nothing can be written to it (the core refuses). */
  blocked: boolean;
}

function Composer({ onSend, onAttach, onTyped, editing, onEditLast, blocked }: ComposerProps) {
  const [text, setText] = useState("");
  // Editing fills the composer with the message's current text.
  useEffect(() => {
    if (editing) setText(editing.body);
  }, [editing]);
  const submit = async (e: Event) => {
    e.preventDefault();
    const body = text;
    setText("");
    try {
      await onSend(body);
    } catch (err) {
      setText(body);
      alert(errorText(err));
    }
  };
  return (
    <form class="composer" onSubmit={submit}>
      <label class="attach" title="Send a file (or drop one on the window)">
        Attach
        <input
          type="file"
          data-testid="attach"
          style={{ position: "absolute", width: "1px", height: "1px", opacity: 0 }}
          onChange={(e) => {
            const input = e.target as HTMLInputElement;
            const file = input.files?.[0];
            input.value = "";
            if (file) onAttach(file).catch((err) => alert(errorText(err)));
          }}
        />
      </label>
      <input
        type="text"
        placeholder={blocked ? "Unblock them to write to them" : "Write a message (works offline too) · ↑ edits your last one"}
        disabled={blocked}
        value={text}
        onInput={(e) => {
          setText((e.target as HTMLInputElement).value);
          onTyped();
        }}
        onKeyDown={(e) => {
          if (e.key === "ArrowUp" && text === "") {
            e.preventDefault();
            onEditLast();
          }
        }}
      />
      <button type="submit" disabled={blocked}>
        {editing ? "Save" : "Send"}
      </button>
    </form>
  );
}

/** A user action failed: say so rather than swallow it (the store still has every state). */
function report(p: Promise<unknown>) {
  p.catch((e) => alert(errorText(e)));
}

/** Raises a desktop notification for an incoming message when the window is not focused. Each
 * request is counted on `<body data-notifications>` (what the window tests read). */
function notify(from: string, body: string) {
  if (document.hasFocus()) return;
  document.body.dataset.notifications = String(Number(document.body.dataset.notifications ?? 0) + 1);
  import("@tauri-apps/plugin-notification")
    .then(async ({ isPermissionGranted, requestPermission, sendNotification }) => {
      let ok = await isPermissionGranted();
      if (!ok) ok = (await requestPermission()) === "granted";
      if (ok) sendNotification({ title: from, body });
    })
    .catch((e) => console.error("notification failed", e));
}
