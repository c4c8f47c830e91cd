import { describe, expect, it } from "vitest";
import { look, OUTGOING_STATES, movesForward } from "./states";

describe("delivery state icons", () => {
  it("every outgoing state has an icon, a label and a tooltip", () => {
    for (const s of OUTGOING_STATES) {
      const l = look(s);
      expect(l.icon, s).not.toBe("");
      expect(l.label, s).not.toBe("");
      expect(l.tooltip.length, s).toBeGreaterThan(10);
    }
  });
  it("tells the server's copy from the recipient's", () => {
    expect(look("acked").tone).toBe("server");
    expect(look("delivered").tone).toBe("peer");
    expect(look("displayed").tone).toBe("peer");
    expect(look("failed").tone).toBe("problem");
    expect(look("hibernated").tone).toBe("pending");
    expect(new Set(OUTGOING_STATES.map((s) => look(s).label)).size).toBe(OUTGOING_STATES.length);
  });
});

describe("events only move a message forward", () => {
  it("follows the core's moves", () => {
    expect(movesForward("sent", "acked")).toBe(true);
    expect(movesForward("delivered", "acked")).toBe(false);
    expect(movesForward("displayed", "delivered")).toBe(false);
    expect(movesForward("acked", "acked")).toBe(false);
    expect(movesForward("failed", "queued")).toBe(true);
  });
});
