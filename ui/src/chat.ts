// What the window shows of corrections, reactions, replies and typing. Every rule about them
// lives in the core; these only turn the core's rows and events into what is drawn.

import type { ChatState, MessageRow, ReactionCount } from "./generated/contract";

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
