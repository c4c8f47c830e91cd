// Thin typed wrappers over the Tauri commands and events. The core decides everything; this
// file only names the calls.

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type {
  AccountEvent,
  AccountStatus,
  BlockEntry,
  ChatState,
  CommandError,
  Contact,
  Edit,
  InboxConversation,
  MessageRow,
  Occupant,
  Profile,
  Room,
  SearchHit,
} from "./generated/contract";

// The rows and events are the core's own types, generated from Rust (core/src/contract.rs).
export type {
  AccountStatus,
  BlockEntry,
  Contact,
  InboxConversation,
  Occupant,
  Profile,
  Room,
  SearchHit,
} from "./generated/contract";
export type Message = MessageRow;

export interface AccountInfo {
  jid: string;
  server: string | null;
}

/** What a failed command rejects with (the shell's `CommandError`). */
export type { CommandError } from "./generated/contract";

/** The text to show for a rejected command (a `CommandError`, or anything else). */
export function errorText(e: unknown): string {
  if (e && typeof e === "object" && "message" in e && typeof e.message === "string") {
    return e.message;
  }
  return String(e);
}

/** Whether a rejected command is a `CommandError` of `kind`. */
export function isCommandError(e: unknown, kind: CommandError["kind"]): e is CommandError {
  return !!e && typeof e === "object" && "kind" in e && e.kind === kind;
}

/** A core event of one account, as the CLI prints it (with its `account`). */
export type CoreEvent = AccountEvent;

// The account the window's conversation view works in: every per-account call names it (the
// window shows one account's view at a time; the conversation list has every account's).
let active = "";

/** Makes `jid` the account the per-account calls below go to. */
export function setActiveAccount(jid: string) {
  active = jid;
}

/** The account the view is in. */
export function activeAccount(): string {
  return active;
}

/** A per-account command: the active account goes with the arguments. */
function call<T>(cmd: string, args: Record<string, unknown> = {}) {
  return invoke<T>(cmd, { account: active, ...args });
}

export const api = {
  /** Every account of the store, with its connection state. */
  accounts: () => invoke<AccountStatus[]>("accounts"),
  signIn: (jid: string, password: string, server: string, caFile: string, allowDatabase = false) =>
    invoke<AccountInfo>("sign_in", { jid, password, server, caFile, allowDatabase }),
  /** Creates the account on its server (in-band registration; `invite`: an invitation link, or
   * empty), then signs in to it. */
  signUp: (
    jid: string,
    password: string,
    server: string,
    caFile: string,
    invite: string,
    allowDatabase = false,
  ) => invoke<AccountInfo>("sign_up", { jid, password, server, caFile, invite, allowDatabase }),
  /** Enables or disables an account (a disabled one keeps its history and does not connect). */
  setAccountEnabled: (account: string, enabled: boolean) =>
    invoke<void>("set_account_enabled", { account, enabled }),
  /** Removes an account and its history. */
  removeAccount: (account: string) => invoke<void>("remove_account", { account }),
  /** The unified conversation list: every account's, the newest first. */
  conversations: () => invoke<InboxConversation[]>("conversations"),
  page: (peer: string, before: number | null, limit: number) =>
    call<Message[]>("page", { peer, before, limit }),
  /** Full-text search, newest first; `before`: the last page's last `cursor`. */
  search: (text: string, before: number | null, limit: number) =>
    call<SearchHit[]>("search", { text, before, limit }),
  /** The blocklist (XEP-0191): each entry with the user's wish and what the server said. */
  blocklist: () => call<BlockEntry[]>("blocklist"),
  /** Blocks or unblocks a contact, a full JID or a domain (the core keeps it and tells the server). */
  setBlocked: (jid: string, block: boolean) => call<void>("set_blocked", { jid, block }),
  /** What `jid` (a contact, or the account itself) publishes of itself, or null if nothing is
   * known. */
  profile: (jid: string) => call<Profile | null>("profile", { jid }),
  /** An avatar by its SHA-1, as a data: URL (null when its bytes are not stored); `account`:
   * the account that knows it. */
  avatar: (account: string, sha1: string) => invoke<string | null>("avatar", { account, sha1 }),
  /** Sets the account's own nickname; null or empty removes it (the core checks it). */
  setNick: (nick: string | null) => call<void>("set_nick", { nick }),
  /** Sets the account's own avatar from the image file at `path`; resolves to its SHA-1. */
  setAvatar: (path: string) => call<string>("set_avatar", { path }),
  /** Sets the account's own avatar from a file the window read (the picker): its bytes go raw. */
  setAvatarData: async (file: File) =>
    invoke<string>("set_avatar_data", new Uint8Array(await file.arrayBuffer()), {
      headers: { account: encodeURIComponent(active) },
    }),
  /** Whether the server confirmed every change of the account's own profile. */
  profileTold: () => call<boolean>("profile_told"),
  /** Removes the account's own avatar. */
  clearAvatar: () => call<void>("clear_avatar"),
  send: (to: string, body: string) => call<string>("send", { to, body }),
  resend: (ids: string[]) => call<void>("resend", { ids }),
  discard: (ids: string[]) => call<void>("discard", { ids }),
  markRead: (peer: string) => call<void>("mark_read", { peer }),
  joinRoom: (room: string, nick: string) => call<void>("join_room", { room, nick }),
  /** Leaves a room; its bookmark goes, so the account's other devices leave it too. */
  leaveRoom: (room: string) => call<void>("leave_room", { room }),
  contacts: () => call<Contact[]>("contacts"),
  /** Another account's contact list (names for the unified conversation list). */
  contactsOf: (account: string) => invoke<Contact[]>("contacts", { account }),
  rooms: () => call<Room[]>("rooms"),
  /** Invites someone to a room (XEP-0249), delivered as a message. */
  invite: (room: string, to: string, reason: string | null) =>
    call<string>("invite", { room, to, reason }),
  /** Who is in a room (XEP-0045), as the room last said. */
  occupants: (room: string) => call<Occupant[]>("occupants", { room }),
  subscriptionRequests: () => call<string[]>("subscription_requests"),
  answerSubscription: (jid: string, accept: boolean) =>
    call<void>("answer_subscription", { jid, accept }),
  correct: (peer: string, id: string, body: string) => call<string>("correct", { peer, id, body }),
  retract: (peer: string, id: string) => call<string>("retract", { peer, id }),
  react: (peer: string, id: string, emoji: string[]) => call<string>("react", { peer, id, emoji }),
  reply: (peer: string, id: string, body: string) => call<string>("reply", { peer, id, body }),
  edits: (peer: string, id: string) => call<Edit[]>("edits", { peer, id }),
  /** Every failed row of the conversation (corrections and reactions too). */
  failed: (peer: string) => call<Message[]>("failed", { peer }),
  setChatState: (peer: string, chatState: ChatState) =>
    call<boolean>("set_chat_state", { peer, chatState }),
  /** Sends the file at `path` (a dropped file). */
  sendFile: (to: string, path: string) => call<string>("send_file", { to, path }),
  /** Sends a file the window read (the attach button): its bytes go raw. */
  sendFileData: async (to: string, file: File) =>
    invoke<string>("send_file_data", new Uint8Array(await file.arrayBuffer()), {
      headers: {
        account: encodeURIComponent(active),
        to: encodeURIComponent(to),
        name: encodeURIComponent(file.name),
      },
    }),
  /** The bytes of a message's file that is on this device (previews). */
  fileBytes: async (peer: string, id: string): Promise<Uint8Array> => {
    // An ArrayBuffer over the custom-protocol IPC, an array of numbers where the webview falls
    // back to postMessage.
    const r = await call<ArrayBuffer | number[]>("file_bytes", { peer, id });
    return r instanceof ArrayBuffer ? new Uint8Array(r) : Uint8Array.from(r);
  },
  /** Saves a message's file into Downloads; resolves to where. */
  saveFile: (peer: string, id: string) => call<string>("save_file", { peer, id }),
  retryNow: () => call<void>("retry_now"),
  onEvent: (f: (e: CoreEvent) => void): Promise<UnlistenFn> =>
    listen<CoreEvent>("tether://event", (e) => f(e.payload)),
  /** The window fell behind the core's events: what it shows must be reloaded from the store. */
  onLagged: (f: (missed: number) => void): Promise<UnlistenFn> =>
    listen<number>("tether://lagged", (e) => f(e.payload)),
};
