// The decisions around failed messages: the banner's text and the confirmation before a resend.
// Tether never resends a failed message without the user; an old message may no longer be wanted,
// so every confirmation says how old it is.

import type { Message } from "./api";

/** "just now", "5 minutes", "3 hours", "2 days". */
export function age(createdAt: number, now: number): string {
  const s = Math.max(0, Math.floor((now - createdAt) / 1000));
  if (s < 60) return "just now";
  const m = Math.floor(s / 60);
  if (m < 60) return m === 1 ? "1 minute" : `${m} minutes`;
  const h = Math.floor(m / 60);
  if (h < 48) return h === 1 ? "1 hour" : `${h} hours`;
  const d = Math.floor(h / 24);
  return `${d} days`;
}

export function failedIn(messages: Message[]): Message[] {
  return messages.filter((m) => m.direction === "out" && m.state === "failed");
}

/** The banner's line, or null when nothing failed. */
export function bannerText(failedCount: number): string | null {
  if (failedCount <= 0) return null;
  return failedCount === 1
    ? "1 message was not sent."
    : `${failedCount} messages were not sent.`;
}

export interface Confirmation {
  title: string;
  body: string;
  confirm: string;
}

/** What the user confirms before a resend of `messages`. */
export function resendConfirmation(messages: Message[], now: number): Confirmation {
  if (messages.length === 0) {
    throw new Error("nothing to resend");
  }
  const oldest = Math.min(...messages.map((m) => m.created_at));
  const when = age(oldest, now);
  const written = when === "just now" ? "just now" : `${when} ago`;
  if (messages.length === 1) {
    return {
      title: "Resend this message?",
      body: `You wrote it ${written}. If it did reach them after all, they will not see it twice.`,
      confirm: "Resend",
    };
  }
  return {
    title: `Resend ${messages.length} messages?`,
    body: `The oldest was written ${written}. Messages that did reach them after all will not show twice.`,
    confirm: `Resend ${messages.length}`,
  };
}
