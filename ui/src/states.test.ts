import { describe, expect, it } from "vitest";
import { look, OUTGOING_STATES } from "./states";

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
