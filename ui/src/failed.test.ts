import { describe, expect, it } from "vitest";
import { age, bannerText, failedIn, resendConfirmation } from "./failed";
import type { Message } from "./api";

const msg = (over: Partial<Message>): Message => ({
  seq: 1, id: "a", origin_id: null, stanza_id: null, peer: "bob@localhost", direction: "out",
  body: "hi", state: "failed", error: null, attempts: 1, created_at: 0, updated_at: 0,
  sent_at: null, acked_at: null, server_ts: null, kind: "chat", other_device: false,
  from_nick: null, action: null, target: null, edited: false, retracted: false, reactions: [],
  reply_to: null, file: null, invite: null, ...over,
});

describe("failed messages", () => {
  it("counts only our failed messages", () => {
    const ms = [msg({ id: "1" }), msg({ id: "2", state: "acked" }), msg({ id: "3", direction: "in", state: "received" })];
    expect(failedIn(ms).map((m) => m.id)).toEqual(["1"]);
  });
  it("banner text", () => {
    expect(bannerText(0)).toBeNull();
    expect(bannerText(1)).toBe("1 message was not sent.");
    expect(bannerText(3)).toBe("3 messages were not sent.");
  });
  it("ages", () => {
    expect(age(0, 30_000)).toBe("just now");
    expect(age(0, 60_000)).toBe("1 minute");
    expect(age(0, 5 * 60_000)).toBe("5 minutes");
    expect(age(0, 3 * 3600_000)).toBe("3 hours");
    expect(age(0, 3 * 86400_000)).toBe("3 days");
  });
  it("confirmation says how old the message is", () => {
    const now = 2 * 3600_000;
    const one = resendConfirmation([msg({ created_at: 0 })], now);
    expect(one.title).toBe("Resend this message?");
    expect(one.body).toContain("2 hours ago");
    const many = resendConfirmation([msg({ created_at: 3600_000 }), msg({ id: "b", created_at: 0 })], now);
    expect(many.title).toBe("Resend 2 messages?");
    expect(many.body).toContain("oldest was written 2 hours ago");
    expect(() => resendConfirmation([], now)).toThrow();
  });
});
