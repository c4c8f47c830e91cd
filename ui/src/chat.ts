// What the window shows of corrections, reactions, replies and typing. Every rule about them
// lives in the core; these only turn the core's rows and events into what is drawn.

import { sha1 } from "@noble/hashes/legacy.js";
import { Hsluv } from "hsluv";
import type { BlockEntry, ChatState, Contact, MessageRow, ReactionCount } from "./generated/contract";

/** The quick reactions offered on every message. */
export const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "🎉"] as const;

/** Our whole reaction set after tapping `emoji` (the core takes the set, not a delta). */
export function toggledReactions(reactions: ReactionCount[], emoji: string): string[] {
  const mine = reactions.filter((r) => r.mine).map((r) => r.emoji);
  return mine.includes(emoji) ? mine.filter((e) => e !== emoji) : [...mine, emoji];
}

/** The newest message of ours that can still be corrected (Up arrow in an empty composer). */
export function lastEditable(messages: MessageRow[]): MessageRow | null {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m.direction === "out" && !m.retracted && m.state !== "discarded") return m;
  }
  return null;
}

/** The text of a bubble. */
export function shownBody(m: MessageRow): string {
  return m.retracted ? "This message was retracted" : m.body;
}

/** A byte count for people. */
export function humanSize(bytes: number | null): string {
  if (bytes === null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** The fraction of a transfer done (0..1), or null when nothing is moving. */
export function transferFraction(
  transfer: string,
  done: number,
  total: number | null,
): number | null {
  if (!["slot-needed", "uploading", "remote", "downloading"].includes(transfer)) return null;
  if (!total) return 0;
  return Math.max(0, Math.min(1, done / total));
}

/** The typing line under a conversation, or null. Who is typing comes from `chat:state` events. */
export function typingLine(states: Record<string, ChatState>, peer: string | null): string | null {
  if (!peer) return null;
  switch (states[peer]) {
    case "composing":
      return `${peer} is typing…`;
    case "paused":
      return `${peer} stopped typing`;
    default:
      return null;
  }
}

/** When a message was written: the sender's or the server's stamp when one came with it (a
 * message fetched from the archive after a day offline keeps its day), else when it was stored. */
export function sentAt(m: MessageRow): number {
  return m.server_ts ?? m.created_at;
}

/** Whether two instants fall on the same local day. */
export function sameDay(a: number, b: number): boolean {
  const x = new Date(a);
  const y = new Date(b);
  return x.getFullYear() === y.getFullYear() && x.getMonth() === y.getMonth() && x.getDate() === y.getDate();
}

/** The separator above the first message of a day: "Today", "Yesterday", or the date. */
export function dayLabel(at: number, now: number): string {
  if (sameDay(at, now)) return "Today";
  if (sameDay(at, now - 86_400_000)) return "Yesterday";
  const d = new Date(at);
  const sameYear = d.getFullYear() === new Date(now).getFullYear();
  return d.toLocaleDateString([], {
    weekday: "short",
    day: "numeric",
    month: "short",
    ...(sameYear ? {} : { year: "numeric" }),
  });
}

/** Whether a day separator goes above `m` (the first row, or a new day after `prev`). */
export function startsDay(m: MessageRow, prev: MessageRow | undefined): boolean {
  return !prev || !sameDay(sentAt(prev), sentAt(m));
}

/** The entry that blocks `peer` (the user wants it blocked), if any. */
export function blockOf(list: BlockEntry[], peer: string | null): BlockEntry | undefined {
  return peer ? list.find((e) => e.jid === peer && e.want === "block") : undefined;
}

/** What the blocked banner says of an entry: blocked here at once, and what the server said. */
export function blockedText(e: BlockEntry): string {
  const head = `You blocked ${e.jid}: nothing they send is shown, and you cannot write to them.`;
  switch (e.state) {
    case "confirmed":
      return head;
    case "pending":
      return `${head} (The server is told when you are online.)`;
    case "refused":
      return `${head} The server refused it${e.error ? ` (${e.error})` : ""}: it is blocked on this device only, and asked again next time.`;
    default:
      return head;
  }
}

/** XEP-0392 §5.1: the hue angle (degrees) of an identifier: SHA-1 of its UTF-8, the first two
 * bytes as a little-endian 16-bit number, scaled to a full circle. */
export function consistentHue(id: string): number {
  const h = sha1(new TextEncoder().encode(id));
  return ((h[0] | (h[1] << 8)) / 65536) * 360;
}

/** XEP-0392 §5.4: the colour of an identifier (a nick in a room, else a bare JID): its hue in
 * HSLuv at saturation 100 and lightness 50, as `#rrggbb`; the same in every client that
 * implements the XEP. */
export function consistentColor(id: string): string {
  const c = new Hsluv();
  c.hsluv_h = consistentHue(id);
  c.hsluv_s = 100;
  c.hsluv_l = 50;
  c.hsluvToHex();
  return c.hex;
}

/** XEP-0245: a body that starts with "/me " is an action by its sender ("* alice waves"); the
 * text after the command, or null for an ordinary message. */
export function meAction(body: string): string | null {
  return body.startsWith("/me ") ? body.slice(4) : null;
}

/** The name to show for a JID: the roster's name when the user gave one, else the nickname they
 * publish (else their vCard's full name, as the core fills `nick`), else the JID. */
export function displayName(contacts: Contact[], jid: string): string {
  const c = contacts.find((c) => c.jid === jid);
  return c?.name || c?.nick || jid;
}

/** The letter on an avatar that has no picture: the first character of the shown name (a JID's
 * is its local part's), upper-cased; "?" when there is none. */
export function initials(name: string): string {
  const first = [...name.trim()][0];
  return first ? first.toUpperCase() : "?";
}

/** Applies the answers of one kind of request only while they are the newest asked: an older
 * answer that arrives after a newer one (a page asked when a conversation opened, answered after
 * the page asked for the message that arrived meanwhile) is dropped, not shown over it. */
export function latestOnly() {
  let asked = 0;
  return <T>(answer: Promise<T>, apply: (value: T) => void): Promise<void> => {
    const mine = ++asked;
    return answer.then((value) => {
      if (mine === asked) apply(value);
    });
  };
}
