import { describe, expect, test } from "vitest";
import {
  latestOnly,
  consistentColor,
  consistentHue,
  displayName,
  initials,
  meAction,
  blockOf,
  blockedText,
  dayLabel,
  lastEditable,
  sentAt,
  shownBody,
  startsDay,
  toggledReactions,
  typingLine,
} from "./chat";
import type { MessageRow } from "./generated/contract";

function row(over: Partial<MessageRow>): MessageRow {
  return {
    seq: 1, id: "m", origin_id: null, stanza_id: null, peer: "bob@localhost", direction: "out",
    body: "hi", state: "acked", error: null, attempts: 1, created_at: 0, updated_at: 0,
    sent_at: null, acked_at: null, server_ts: null, kind: "chat", other_device: false,
    from_nick: null, action: null, target: null, edited: false, retracted: false, reactions: [],
    reply_to: null, file: null, invite: null, ...over,
  };
}

describe("reactions", () => {
  test("a tap adds our emoji to our set, a second tap takes it away", () => {
    const rs = [
      { emoji: "👍", count: 2, mine: true },
      { emoji: "🎉", count: 1, mine: false },
    ];
    expect(toggledReactions(rs, "🎉")).toEqual(["👍", "🎉"]);
    expect(toggledReactions(rs, "👍")).toEqual([]);
  });
});

describe("editing", () => {
  test("the last message of ours that is not retracted", () => {
    const ms = [row({ id: "a" }), row({ id: "b", direction: "in" }), row({ id: "c", retracted: true })];
    expect(lastEditable(ms)?.id).toBe("a");
    expect(lastEditable([row({ direction: "in" })])).toBeNull();
  });
  test("a retracted message says so", () => {
    expect(shownBody(row({ retracted: true }))).toBe("This message was retracted");
    expect(shownBody(row({ body: "x" }))).toBe("x");
  });
});

describe("typing", () => {
  test("only the open conversation's contact, only while composing or paused", () => {
    const s = { "bob@localhost": "composing" as const, "carol@localhost": "active" as const };
    expect(typingLine(s, "bob@localhost")).toBe("bob@localhost is typing…");
    expect(typingLine(s, "carol@localhost")).toBeNull();
    expect(typingLine(s, null)).toBeNull();
  });
});

describe("files", () => {
  test("sizes read like people write them", async () => {
    const { humanSize } = await import("./chat");
    expect(humanSize(512)).toBe("512 B");
    expect(humanSize(5 * 1024 * 1024)).toBe("5.0 MB");
    expect(humanSize(null)).toBe("");
  });
  test("a bar only while the file moves", async () => {
    const { transferFraction } = await import("./chat");
    expect(transferFraction("uploading", 50, 200)).toBe(0.25);
    expect(transferFraction("uploaded", 200, 200)).toBeNull();
    expect(transferFraction("downloading", 300, 200)).toBe(1);
    expect(transferFraction("slot-needed", 0, null)).toBe(0);
  });
});

describe("the history's times", () => {
  const noon = new Date(2026, 11, 3, 12, 0).getTime();
  test("a row shows when it was written: the sender's or server's stamp, else when stored", () => {
    expect(sentAt(row({ created_at: noon, server_ts: noon - 86_400_000 }))).toBe(noon - 86_400_000);
    expect(sentAt(row({ created_at: noon, server_ts: null }))).toBe(noon);
  });
  test("a day's first row gets its day: today, yesterday, or the date", () => {
    expect(dayLabel(noon - 3_600_000, noon)).toBe("Today");
    expect(dayLabel(noon - 86_400_000, noon)).toBe("Yesterday");
    const older = dayLabel(new Date(2026, 10, 20, 9, 0).getTime(), noon);
    expect(older).not.toMatch(/Today|Yesterday/);
    expect(older).toMatch(/20/);
    expect(dayLabel(new Date(2025, 10, 20).getTime(), noon)).toMatch(/2025/);
  });
  test("a separator goes above the first row and where the day changes, by the sent time", () => {
    const a = row({ created_at: noon, server_ts: noon - 2 * 86_400_000 });
    const b = row({ created_at: noon, server_ts: null });
    const c = row({ created_at: noon + 60_000, server_ts: null });
    expect(startsDay(a, undefined)).toBe(true);
    expect(startsDay(b, a)).toBe(true);
    expect(startsDay(c, b)).toBe(false);
  });
});

describe("blocking", () => {
  const entry = (jid: string, want: "block" | "unblock", state: "pending" | "confirmed" | "refused") => ({
    jid,
    want,
    state,
    error: state === "refused" ? "NotAllowed" : null,
  });
  test("a peer is blocked by its own entry, while the user wants it blocked", () => {
    const list = [entry("bob@localhost", "block", "confirmed"), entry("carol@localhost", "unblock", "pending")];
    expect(blockOf(list, "bob@localhost")?.state).toBe("confirmed");
    expect(blockOf(list, "carol@localhost")).toBeUndefined();
    expect(blockOf(list, "dave@localhost")).toBeUndefined();
    expect(blockOf(list, null)).toBeUndefined();
  });
  test("the banner says what the server said", () => {
    expect(blockedText(entry("bob@localhost", "block", "confirmed"))).toMatch(/^You blocked bob@localhost/);
    expect(blockedText(entry("bob@localhost", "block", "pending"))).toMatch(/told when you are online/);
    expect(blockedText(entry("bob@localhost", "block", "refused"))).toMatch(/refused it \(NotAllowed\).*this device only/);
  });
});

describe("names and colours", () => {
  test("XEP-0392's test vectors: the hue angle", () => {
    // XEP-0392 Appendix A (the values without colour vision deficiency correction).
    expect(consistentHue("Romeo")).toBeCloseTo(327.255249, 5);
    expect(consistentHue("juliet@capulet.lit")).toBeCloseTo(209.4104, 4);
    expect(consistentHue("😺")).toBeCloseTo(331.199341, 5);
    expect(consistentHue("council")).toBeCloseTo(359.994507, 5);
  });
  test("a colour is an HSLuv colour of that hue, the same every time", () => {
    const romeo = consistentColor("Romeo");
    expect(romeo).toMatch(/^#[0-9a-f]{6}$/);
    expect(consistentColor("Romeo")).toBe(romeo);
    expect(consistentColor("juliet@capulet.lit")).not.toBe(romeo);
    // Romeo's hue is a magenta: red and blue, almost no green.
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(romeo.slice(i, i + 2), 16));
    expect(r).toBeGreaterThan(180);
    expect(b).toBeGreaterThan(120);
    expect(g).toBeLessThan(40);
  });
  test("/me is an action, anything else a message", () => {
    expect(meAction("/me waves")).toBe("waves");
    expect(meAction("/meh")).toBeNull();
    expect(meAction("hello /me")).toBeNull();
  });
  test("the roster's name when there is one, else the nickname they publish, else the JID", () => {
    const contacts = [
      { jid: "bob@localhost", name: "Bob", subscription: "both", ask: false, presence: "available", nick: "Bobby Tables", avatar: null },
      { jid: "carol@localhost", name: null, subscription: "to", ask: false, presence: "unavailable", nick: null, avatar: null },
      { jid: "erin@localhost", name: null, subscription: "both", ask: false, presence: "available", nick: "Erin", avatar: "ab" },
      { jid: "frank@localhost", name: "", subscription: "both", ask: false, presence: "available", nick: "", avatar: null },
    ];
    expect(displayName(contacts, "bob@localhost")).toBe("Bob");
    expect(displayName(contacts, "carol@localhost")).toBe("carol@localhost");
    expect(displayName(contacts, "erin@localhost")).toBe("Erin");
    expect(displayName(contacts, "frank@localhost")).toBe("frank@localhost");
    expect(displayName(contacts, "dave@localhost")).toBe("dave@localhost");
  });
  test("an avatar without a picture shows the name's first letter", () => {
    expect(initials("Bobby Tables")).toBe("B");
    expect(initials("carol@localhost")).toBe("C");
    expect(initials("😺 cat")).toBe("😺");
    expect(initials("  ")).toBe("?");
  });
});

describe("answers out of order", () => {
  test("an older answer arriving after a newer one is not applied", async () => {
    const latest = latestOnly();
    const shown: string[] = [];
    let answerOld: (v: string) => void = () => {};
    const old = latest(new Promise<string>((r) => (answerOld = r)), (v) => shown.push(v));
    await latest(Promise.resolve("new page"), (v) => shown.push(v));
    answerOld("stale page");
    await old;
    expect(shown).toEqual(["new page"]);
    await latest(Promise.resolve("next"), (v) => shown.push(v));
    expect(shown).toEqual(["new page", "next"]);
  });
});
