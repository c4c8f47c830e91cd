// How each delivery state looks. The states and their meaning come from the core; this file only
// decides the icon, label and tooltip, so a user always knows who has the message.

import { MOVES, type State } from "./generated/contract";

/** A delivery state, as the core defines it. */
export type DeliveryState = State;

/** Whether an event moving a message from `from` to `to` moves it forward (the core's rule:
 * a late or duplicated event never moves a message back). */
export function movesForward(from: DeliveryState, to: DeliveryState): boolean {
  return from !== to && MOVES[from].includes(to);
}

export interface StateLook {
  /** A short glyph shown under the message. */
  icon: string;
  /** One word for screen readers and the legend. */
  label: string;
  /** The tooltip: who has the message, and what happens next. */
  tooltip: string;
  /** A CSS modifier. */
  tone: "pending" | "server" | "peer" | "problem" | "muted";
}

const LOOKS: Record<DeliveryState, StateLook> = {
  queued: {
    icon: "🕓",
    label: "Queued",
    tooltip: "Saved on this device; it goes out as soon as you are online.",
    tone: "pending",
  },
  sent: {
    icon: "↗",
    label: "Sent",
    tooltip: "On its way to the server; waiting for the server to confirm it.",
    tone: "pending",
  },
  hibernated: {
    icon: "⏸",
    label: "Waiting",
    tooltip: "The connection dropped before the server confirmed it. Tether resumes the session and resends it if needed.",
    tone: "pending",
  },
  retrying: {
    icon: "↻",
    label: "Retrying",
    tooltip: "The session was resumed and the message resent; waiting for the server.",
    tone: "pending",
  },
  checking: {
    icon: "🔎",
    label: "Checking",
    tooltip: "The connection was lost before the server confirmed it. Tether is asking the server's archive whether it arrived before asking you.",
    tone: "pending",
  },
  acked: {
    icon: "✓",
    label: "On server",
    tooltip: "The server has it. It reaches the recipient when they are online.",
    tone: "server",
  },
  reflected: {
    icon: "✓",
    label: "In room",
    tooltip: "The room has it and sent it to everyone in it.",
    tone: "server",
  },
  delivered: {
    icon: "✓✓",
    label: "Delivered",
    tooltip: "The recipient's device has it.",
    tone: "peer",
  },
  displayed: {
    icon: "👁",
    label: "Read",
    tooltip: "The recipient has read it.",
    tone: "peer",
  },
  failed: {
    icon: "⚠",
    label: "Not sent",
    tooltip: "The server never confirmed it and its archive does not have it. Resend it or discard it: Tether does not resend on its own.",
    tone: "problem",
  },
  discarded: {
    icon: "✕",
    label: "Discarded",
    tooltip: "You chose not to send it.",
    tone: "muted",
  },
  received: {
    icon: "",
    label: "Received",
    tooltip: "",
    tone: "muted",
  },
};

export function look(state: DeliveryState): StateLook {
  return LOOKS[state];
}

/** Every outgoing state a legend shows, in the order a message moves. */
export const OUTGOING_STATES: DeliveryState[] = [
  "queued",
  "sent",
  "hibernated",
  "retrying",
  "checking",
  "acked",
  "reflected",
  "delivered",
  "displayed",
  "failed",
];
