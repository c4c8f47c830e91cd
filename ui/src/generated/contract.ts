// Generated from tether-core (core/src/contract.rs) by ts-rs: do not edit.
// Regenerate: TETHER_WRITE_CONTRACT=1 cargo test -p tether-core contract

export type State = "queued" | "sent" | "hibernated" | "retrying" | "checking" | "acked" | "reflected" | "delivered" | "displayed" | "failed" | "discarded" | "received";

export type Direction = "out" | "in";

export type Action = "correct" | "retract" | "react";

export type ReactionCount = { 
/**
 * The emoji.
 */
emoji: string, 
/**
 * How many senders reacted with it.
 */
count: number, 
/**
 * Whether we are one of them.
 */
mine: boolean, };

export type Quoted = { 
/**
 * Its id.
 */
id: string, 
/**
 * Its current text; `None` if it was retracted.
 */
body: string | null, 
/**
 * Its direction (`out`: we wrote it).
 */
direction: Direction, 
/**
 * For group chat: its sender's nickname.
 */
from_nick: string | null, };

export type Attachment = { 
/**
 * The file's name (safe to show and to save under).
 */
name: string, 
/**
 * Bytes (as announced, for theirs).
 */
size: number | null, 
/**
 * MIME type, if known.
 */
media_type: string | null, 
/**
 * SHA-256 (hex): ours always; theirs once downloaded, or as announced.
 */
sha256: string | null, 
/**
 * Where it can be fetched (ours once uploaded).
 */
url: string | null, 
/**
 * `slot-needed`, `uploading`, `uploaded`, `remote`, `downloading`, `downloaded`, `failed`.
 */
transfer: string, 
/**
 * Bytes moved so far in the current transfer.
 */
done_bytes: number, 
/**
 * Why the transfer failed.
 */
error: string | null, 
/**
 * Where the file is on this device, once it is here.
 */
local_path: string | null, };

export type MessageRow = { 
/**
 * Local order (for paging: ask for rows before this one).
 */
seq: number, 
/**
 * The stanza id (kept across resends).
 */
id: string, 
/**
 * XEP-0359 origin-id.
 */
origin_id: string | null, 
/**
 * XEP-0359 stanza-id stamped by our server.
 */
stanza_id: string | null, 
/**
 * Bare JID of the other side.
 */
peer: string, 
/**
 * `out` or `in`.
 */
direction: Direction, 
/**
 * The text.
 */
body: string, 
/**
 * Delivery state.
 */
state: State, 
/**
 * Why it failed, if it did.
 */
error: string | null, 
/**
 * Times written to a stream.
 */
attempts: number, 
/**
 * Committed locally (ms since epoch).
 */
created_at: number, 
/**
 * Last state change (ms).
 */
updated_at: number, 
/**
 * Last written to a stream (ms).
 */
sent_at: number | null, 
/**
 * Acked by the server (ms).
 */
acked_at: number | null, 
/**
 * The sender's or server's timestamp, for inbound messages (ms).
 */
server_ts: number | null, 
/**
 * `chat` or `groupchat`.
 */
kind: string, 
/**
 * Sent by another device of this account (learnt from a carbon or the archive).
 */
other_device: boolean, 
/**
 * For group chat: the sender's nickname in the room.
 */
from_nick: string | null, 
/**
 * What this row does to another message; `None` for a message of its own (maybe a reply).
 */
action: Action | null, 
/**
 * The id of the message it acts on or replies to, as the stanza names it (the room's
 * stanza-id in group chat).
 */
target: string | null, 
/**
 * The text was corrected: `body` is the newest correction's, [`Store::edits`] has them all.
 */
edited: boolean, 
/**
 * The sender took the message back.
 */
retracted: boolean, 
/**
 * Reactions to the message: each emoji, how many reacted with it, whether we did.
 */
reactions: Array<ReactionCount>, 
/**
 * For a reply: the message it answers, as this store has it (never the quote the sender put
 * in the body: that one could say anything). `None` until that message is here.
 */
reply_to: Quoted | null, 
/**
 * The file it carries, if any.
 */
file: Attachment | null, 
/**
 * A direct invitation (XEP-0249) to this room: its bare JID.
 */
invite: string | null, };

export type Edit = { 
/**
 * The text.
 */
body: string, 
/**
 * When it was written (the sender's or server's time if known, else when it was stored; ms).
 */
at: number, };

export type SearchHit = { 
/**
 * Where the next page starts (pass it as [`SearchQuery::before`]). It is the row whose text
 * matched: the message's own, or its newest correction's.
 */
cursor: number, 
/**
 * The account it belongs to.
 */
account: number, 
/**
 * The message as a conversation shows it (its current text; page its history around
 * [`MessageRow::seq`] to jump to it).
 */
message: MessageRow, };

export type ChatState = "active" | "composing" | "paused" | "inactive" | "gone";

export type Conversation = { 
/**
 * The contact or room.
 */
peer: string, 
/**
 * `chat` or `groupchat`.
 */
kind: string, 
/**
 * The newest message's text.
 */
last_body: string, 
/**
 * When it was sent (ms): the sender's or the server's timestamp when one came with it,
 * else when it was committed here. The list is ordered by it, the newest first.
 */
last_at: number, 
/**
 * Whether the newest message is ours.
 */
last_outgoing: boolean, 
/**
 * Incoming messages not yet read.
 */
unread: number, 
/**
 * Failed messages waiting for the user.
 */
failed: number, };

export type Contact = { 
/**
 * Bare JID.
 */
jid: string, 
/**
 * Display name.
 */
name: string | null, 
/**
 * none, to, from, both.
 */
subscription: string, 
/**
 * A subscription request of ours is pending.
 */
ask: boolean, 
/**
 * Last presence seen: available or unavailable.
 */
presence: string, 
/**
 * The nickname they publish (else their vCard's full name): the name shown when the user
 * gave them none.
 */
nick: string | null, 
/**
 * Their avatar's SHA-1 ([`Store::avatar`] gives the bytes).
 */
avatar: string | null, };

export type Room = { 
/**
 * The room's bare JID.
 */
jid: string, 
/**
 * Our nickname.
 */
nick: string, 
/**
 * Whether the room confirmed our presence on the current session.
 */
joined: boolean, };

export type Occupant = { 
/**
 * Their nickname in the room.
 */
nick: string, 
/**
 * Their real bare JID, when the room shows it to us.
 */
jid: string | null, 
/**
 * `moderator`, `participant`, `visitor`.
 */
role: string, 
/**
 * `owner`, `admin`, `member`, `none`.
 */
affiliation: string, };

export type Profile = { 
/**
 * Bare JID.
 */
jid: string, 
/**
 * The nickname they chose (XEP-0172, else their vCard's).
 */
nick: string | null, 
/**
 * Their full name (their vCard's).
 */
full_name: string | null, 
/**
 * Their avatar's SHA-1 (lowercase hex), whose bytes [`Store::avatar`] gives.
 */
avatar: string | null, 
/**
 * The avatar's image type.
 */
avatar_mime: string | null, };

export type BlockWant = "block" | "unblock";

export type BlockState = "pending" | "confirmed" | "refused";

export type BlockEntry = { 
/**
 * The JID as blocked: bare, full, or a domain.
 */
jid: string, 
/**
 * Block or unblock.
 */
want: BlockWant, 
/**
 * What the server said.
 */
state: BlockState, 
/**
 * Why the server refused it.
 */
error: string | null, };

export type ConnState = "connecting" | "online" | "offline";

export type MessageEvent = { 
/**
 * The event name, e.g. `message:acked` (see [`State::event_name`]).
 */
event: string, 
/**
 * The message id.
 */
id: string, 
/**
 * The recipient's bare JID.
 */
peer: string, 
/**
 * The new state.
 */
state: State, 
/**
 * Why, for `message:failed`.
 */
error?: string, };

export type ReceivedEvent = { 
/**
 * Always `message:received`.
 */
event: string, 
/**
 * The message id.
 */
id: string, 
/**
 * The other side's bare JID (the room, for group chat).
 */
from: string, 
/**
 * The text.
 */
body: string, 
/**
 * `in`, or `out` for our own message sent from another device.
 */
direction: Direction, 
/**
 * For group chat: the room.
 */
room?: string, 
/**
 * For group chat: the sender's nick.
 */
nick?: string, };

export type UpdatedEvent = { 
/**
 * `message:updated`.
 */
event: string, 
/**
 * The changed message's id.
 */
id: string, 
/**
 * The conversation.
 */
peer: string, 
/**
 * What changed it.
 */
action: Action, };

export type TransferEvent = { 
/**
 * `file:slot`, `file:progress`, `file:uploaded`, `file:downloaded` or `file:failed`.
 */
event: string, 
/**
 * The message's local key (its id is in `id` when known).
 */
key: number, 
/**
 * The message's id.
 */
id?: string, 
/**
 * Bytes moved so far.
 */
done: number, 
/**
 * Bytes in all, if known.
 */
total?: number, 
/**
 * Why it failed.
 */
error?: string, };

export type ConnectionEvent = { 
/**
 * Always `connection`.
 */
event: string, 
/**
 * The new state.
 */
state: ConnState, 
/**
 * For `online`: whether the previous stream was resumed (nothing was lost in between).
 */
resumed?: boolean, 
/**
 * For `offline`: why.
 */
reason?: string, 
/**
 * For `offline`: when the next attempt starts, if one will.
 */
retry_in_ms?: number, };

export type ErrorKind = "usage" | "auth" | "tls" | "network" | "protocol" | "database" | "timeout" | "internal" | "stanza" | "security" | "mam" | "roster" | "presence";

export type ErrorEvent = { 
/**
 * Always `error`.
 */
event: string, 
/**
 * What kind of error (see [`ErrorKind`]).
 */
kind: ErrorKind, 
/**
 * What happened.
 */
message: string, };

export type SocialEvent = { "event": "presence", 
/**
 * Full JID.
 */
from: string, 
/**
 * Available or not.
 */
available: boolean, } | { "event": "subscription:request", 
/**
 * Bare JID.
 */
from: string, } | { "event": "roster", 
/**
 * Bare JID.
 */
jid: string, 
/**
 * none, to, from, both, remove.
 */
subscription: string, } | { "event": "room:joined", 
/**
 * Room bare JID.
 */
room: string, 
/**
 * Our nick.
 */
nick: string, } | { "event": "room:rejoining", 
/**
 * Room bare JID.
 */
room: string, 
/**
 * What the room answered.
 */
reason: string, } | { "event": "room:bookmark", 
/**
 * Room bare JID.
 */
room: string, 
/**
 * Joined (else left).
 */
joined: boolean, } | { "event": "profile", 
/**
 * Bare JID.
 */
jid: string, } | { "event": "events:missed", 
/**
 * How many.
 */
count: number, } | { "event": "mam:synced", 
/**
 * The archive (own bare JID or a room).
 */
archive: string, 
/**
 * New messages stored.
 */
count: number, } | { "event": "csi", 
/**
 * `inactive` or `active`.
 */
state: string, } | { "event": "chat:state", 
/**
 * The contact's bare JID.
 */
from: string, 
/**
 * `composing`, `paused`, `active`, `inactive` or `gone`.
 */
state: ChatState, } | { "event": "push", 
/**
 * `enabled`, `disabled` or `refused`.
 */
state: string, 
/**
 * The app server's JID.
 */
service: string, 
/**
 * The node.
 */
node: string, 
/**
 * Why it was refused.
 */
error?: string, } | { "event": "blocking", 
/**
 * The entry: a bare or full JID, or a domain.
 */
jid: string, 
/**
 * `blocked`, `unblocked` or `refused`.
 */
state: string, 
/**
 * Why the server refused it (the entry keeps the user's wish, told again on the next
 * session; a blocked entry stays blocked here meanwhile).
 */
error?: string, };

export type Event = MessageEvent | ReceivedEvent | UpdatedEvent | TransferEvent | ConnectionEvent | ErrorEvent | SocialEvent;

export type AccountEvent = { 
/**
 * The account's bare JID.
 */
account: string, } & (MessageEvent | ReceivedEvent | UpdatedEvent | TransferEvent | ConnectionEvent | ErrorEvent | SocialEvent);

export type AccountStatus = { 
/**
 * The bare JID.
 */
jid: string, 
/**
 * Whether it connects (a disabled account keeps its history and queue).
 */
enabled: boolean, 
/**
 * Its last connection event, `None` while it has not run.
 */
connection: Event | null, 
/**
 * Its session's final error, if it ended with one (a wrong password, a refused
 * certificate): it stays until the account is started again.
 */
stopped: string | null, };

export type InboxConversation = { 
/**
 * The account's bare JID.
 */
account: string, 
/**
 * The contact or room.
 */
peer: string, 
/**
 * `chat` or `groupchat`.
 */
kind: string, 
/**
 * The newest message's text.
 */
last_body: string, 
/**
 * When it was sent (ms): the sender's or the server's timestamp when one came with it,
 * else when it was committed here. The list is ordered by it, the newest first.
 */
last_at: number, 
/**
 * Whether the newest message is ours.
 */
last_outgoing: boolean, 
/**
 * Incoming messages not yet read.
 */
unread: number, 
/**
 * Failed messages waiting for the user.
 */
failed: number, };

export type Defaults = { 
/**
 * First reconnect delay.
 */
reconnect_min_ms: number, 
/**
 * Longest reconnect delay.
 */
reconnect_max_ms: number, 
/**
 * Silence before the keepalive probe.
 */
keepalive_secs: number, 
/**
 * Time the probe has before the link counts as dead.
 */
dead_after_secs: number, 
/**
 * Time the immediate probe after a network change has.
 */
quick_probe_secs: number, 
/**
 * How often another process's commits are looked for (0: never by a timer).
 */
outbox_poll_ms: number, 
/**
 * How far back the first archive sync reaches.
 */
mam_first_sync_days: number, 
/**
 * The most the server may send without completing an element.
 */
max_stanza_kib: number, };

export type CommandErrorKind = "no_keyring" | "not_signed_in" | "already_signed_in" | "internal" | "core";

export type CommandError = { 
/**
 * What failed.
 */
kind: CommandErrorKind, 
/**
 * For [`CommandErrorKind::Core`]: the core's kind of error.
 */
core: ErrorKind | null, 
/**
 * What to tell the user (the core's messages say what to do).
 */
message: string, };

/** The states each state may move to (the core's `State::can_move_to`). */
export const MOVES: Record<State, readonly State[]> = {
  queued: ["sent", "failed"],
  sent: ["hibernated", "checking", "acked", "reflected", "delivered", "displayed", "failed"],
  hibernated: ["retrying", "checking", "acked", "reflected", "delivered", "displayed", "failed"],
  retrying: ["hibernated", "checking", "acked", "reflected", "delivered", "displayed", "failed"],
  checking: ["acked", "reflected", "delivered", "displayed", "failed"],
  acked: ["reflected", "delivered", "displayed", "failed"],
  reflected: ["delivered", "displayed"],
  delivered: ["displayed"],
  displayed: [],
  failed: ["queued", "discarded"],
  discarded: [],
  received: ["displayed"],
};

/** The configuration defaults. */
export const DEFAULTS: Defaults = {
  "reconnect_min_ms": 500,
  "reconnect_max_ms": 60000,
  "keepalive_secs": 20,
  "dead_after_secs": 10,
  "quick_probe_secs": 5,
  "outbox_poll_ms": 200,
  "mam_first_sync_days": 7,
  "max_stanza_kib": 4096
};
