import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import {
  api,
  errorText,
  isCommandError,
  type AccountInfo,
  type Contact,
  type Conversation,
  type CoreEvent,
  type Message,
  type Room,
} from "../api";
import { bannerText, failedIn, resendConfirmation, type Confirmation } from "../failed";
import { look, movesForward } from "../states";
import type { ConnectionEvent, MessageEvent, ReceivedEvent } from "../generated/contract";
import { MessageList } from "./MessageList";

const PAGE = 50;

interface Connection {
  state: "connecting" | "online" | "offline";
  resumed?: boolean;
  reason?: string;
  retryAt?: number;
}

export function App() {
  const [account, setAccount] = useState<AccountInfo | null | undefined>(undefined);
  const [fatal, setFatal] = useState<string | null>(null);
  useEffect(() => {
    api.account().then(setAccount, (e) => setFatal(errorText(e)));
    const un = api.onFatal(setFatal);
    return () => void un.then((f) => f());
  }, []);
  if (account === undefined) return <div class="splash">Tether</div>;
  if (account === null) return <SignIn onDone={setAccount} />;
  return <Main account={account} fatal={fatal} />;
}

function SignIn({ onDone }: { onDone: (a: AccountInfo) => void }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // No keyring: the user decides whether the password may be kept in Tether's database.
  const [askStore, setAskStore] = useState<{ why: string; form: FormData } | null>(null);
  const attempt = async (f: FormData, allowDatabase: boolean) => {
    setBusy(true);
    setError(null);
    try {
      onDone(
        await api.signIn(
          String(f.get("jid")),
          String(f.get("password")),
          String(f.get("server") ?? ""),
          String(f.get("ca") ?? ""),
          allowDatabase,
        ),
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
      <form class="signin" onSubmit={submit}>
        <h1>Sign in to Tether</h1>
        <label>
          Address <input name="jid" placeholder="you@example.org" required autoFocus />
        </label>
        <label>
          Password <input name="password" type="password" required />
        </label>
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
          {busy ? "Signing in…" : "Sign in"}
        </button>
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

function Main({ account, fatal }: { account: AccountInfo; fatal: string | null }) {
  const [conversations, setConversations] = useState<Conversation[]>([]);
  const [peer, setPeer] = useState<string | null>(null);
  const [messages, setMessages] = useState<Message[]>([]);
  const [hasOlder, setHasOlder] = useState(false);
  const [conn, setConn] = useState<Connection>({ state: "connecting" });
  const [confirm, setConfirm] = useState<(Confirmation & { ids: string[] }) | null>(null);
  const [now, setNow] = useState(Date.now());
  const [draftTo, setDraftTo] = useState("");
  const [contacts, setContacts] = useState<Contact[]>([]);
  const [rooms, setRooms] = useState<Room[]>([]);
  const [requests, setRequests] = useState<string[]>([]);
  const [joining, setJoining] = useState(false);
  const peerRef = useRef<string | null>(null);
  peerRef.current = peer;

  const refreshList = useCallback(() => {
    api.conversations().then(setConversations, console.error);
  }, []);
  const refreshPeople = useCallback(() => {
    api.contacts().then(setContacts, console.error);
    api.rooms().then(setRooms, console.error);
    api.subscriptionRequests().then(setRequests, console.error);
  }, []);
  const reload = useCallback(async (p: string) => {
    const page = await api.page(p, null, PAGE);
    if (peerRef.current !== p) return;
    setMessages(page);
    setHasOlder(page.length === PAGE);
  }, []);

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
      api.connection().then((e) => e && onConnection(e as ConnectionEvent), console.error);
    void reloadConnection();
    const un = api.onEvent((e: CoreEvent) => {
      if (e.event === "connection") {
        onConnection(e as ConnectionEvent);
        return;
      }
      if (["roster", "presence", "subscription:request", "room:joined"].includes(e.event)) {
        refreshPeople();
        return;
      }
      if (e.event.startsWith("message:")) {
        const current = peerRef.current;
        if (e.event === "message:received") {
          const r = e as ReceivedEvent;
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
        }
        refreshList();
      }
    });
    // The window fell behind the core's events (some were dropped): everything it shows is
    // reloaded from the store, which has every state.
    const unLagged = api.onLagged(() => {
      refreshList();
      refreshPeople();
      void reloadConnection();
      const current = peerRef.current;
      if (current) void reload(current);
    });
    return () => {
      clearInterval(tick);
      void un.then((f) => f());
      void unLagged.then((f) => f());
    };
  }, [refreshList, refreshPeople, reload]);

  useEffect(() => refreshPeople(), [refreshPeople]);

  useEffect(() => {
    if (!peer) return;
    void reload(peer);
    report(api.markRead(peer).then(refreshList));
  }, [peer, reload, refreshList]);

  const loadOlder = async (): Promise<number> => {
    if (!peer || messages.length === 0) return 0;
    const older = await api.page(peer, messages[0].seq, PAGE);
    setMessages((ms) => [...older, ...ms]);
    setHasOlder(older.length === PAGE);
    return older.length;
  };

  const askResend = (ms: Message[]) =>
    setConfirm({ ...resendConfirmation(ms, Date.now()), ids: ms.map((m) => m.id) });
  const failed = failedIn(messages);
  const banner = bannerText(failed.length);

  const send = async (body: string) => {
    const to = peer ?? draftTo.trim();
    if (!to || !body.trim()) return;
    await api.send(to, body);
    if (!peer) setPeer(to);
    else void reload(to);
    refreshList();
  };

  return (
    <div class="main">
      <aside>
        <header>
          <div class="me">{account.jid}</div>
          <ConnectionBar c={conn} now={now} />
        </header>
        <button class="new" onClick={() => setPeer(null)}>
          New chat
        </button>
        <ul class="conversations">
          {conversations.map((c) => (
            <li
              key={c.peer}
              class={c.peer === peer ? "active" : ""}
              onClick={() => setPeer(c.peer)}
            >
              <div class="row">
                <span class="peer">{c.kind === "groupchat" ? `# ${c.peer}` : c.peer}</span>
                {c.unread > 0 && <span class="badge">{c.unread}</span>}
                {c.failed > 0 && <span class="badge problem">{c.failed} ⚠</span>}
              </div>
              <div class="last">
                {c.last_outgoing ? "You: " : ""}
                {c.last_body}
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
            <input name="nick" placeholder="Your nickname" value={account.jid.split("@")[0]} required />
            <button type="submit">Join</button>
          </form>
        ) : (
          <button class="link join-link" onClick={() => setJoining(true)}>
            + Join a room
          </button>
        )}
        <h4>Contacts</h4>
        <ul class="people">
          {contacts.map((c) => (
            <li key={c.jid} onClick={() => setPeer(c.jid)} class={c.jid === peer ? "active" : ""}>
              <span class={`dot ${c.presence === "available" ? "on" : ""}`} />
              {c.name ?? c.jid}
              {c.ask && <span class="hint"> (waiting for approval)</span>}
            </li>
          ))}
        </ul>
      </aside>
      <section class="conversation">
        {fatal && <div class="fatal">{fatal}</div>}
        {peer ? (
          <h2>{peer}</h2>
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
          row={(m) => <Bubble m={m} onResend={() => askResend([m])} />}
        />
        <Composer onSend={send} />
      </section>
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

function Bubble({ m, onResend }: { m: Message; onResend: () => void }) {
  const l = look(m.state);
  const mine = m.direction === "out";
  return (
    <div class={`bubble ${mine ? "mine" : "theirs"} ${l.tone}`} data-state={m.state}>
      {m.from_nick && !mine && <div class="nick">{m.from_nick}</div>}
      <div class="body">{m.body}</div>
      <div class="meta">
        <time>{new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}</time>
        {mine && (
          <span class="state" title={m.error ? `${l.tooltip}\n${m.error}` : l.tooltip} aria-label={l.label}>
            {l.icon}
          </span>
        )}
      </div>
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

function Composer({ onSend }: { onSend: (body: string) => Promise<void> }) {
  const [text, setText] = useState("");
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
      <input
        placeholder="Write a message (works offline too)"
        value={text}
        onInput={(e) => setText((e.target as HTMLInputElement).value)}
      />
      <button type="submit">Send</button>
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
