// The desktop app in a real window (Xvfb), driven over WebDriver (tauri-driver + WebKitWebDriver),
// against a real Prosody (tether-demo-server) behind the fault proxy (tether-test-proxy), with bob
// as a second Tether client (the CLI). Run by tests/desktop/window.sh under xvfb-run.
//
// Screenshots of each state go to $TETHER_ARTIFACTS (default tests/artifacts).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Builder, By, Key, until } from "selenium-webdriver";

const BIN = process.env.TETHER_BIN_DIR;
const ARTIFACTS = path.resolve(process.env.TETHER_ARTIFACTS ?? "../tests/artifacts");
const WORK = fs.mkdtempSync(path.join(os.tmpdir(), "tether-window-"));
const LONG = 60_000;
const children = [];
let server, proxy, driver, browser, bob;
let serverInfo, proxyAddr;

function start(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], ...opts });
  children.push(child);
  child.stderr.on("data", (d) => fs.appendFileSync(path.join(WORK, `${path.basename(cmd)}.log`), d));
  return child;
}

function firstJsonLine(child) {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.once("line", (line) => resolve({ value: JSON.parse(line), rl }));
    child.once("exit", (code) => reject(new Error(`exited ${code} before printing`)));
  });
}

function tether(db, ...args) {
  const r = spawnSync(path.join(BIN, "tether"), ["--db", db, ...args], { encoding: "utf8" });
  assert.equal(r.status, 0, `tether ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

async function proxyCommand(cmd) {
  proxy.stdin.write(`${cmd}\n`);
  const line = await new Promise((resolve) => proxy.lines.once("line", resolve));
  assert.equal(line, "ok", `proxy ${cmd}`);
}

function waitPort(port) {
  const deadline = Date.now() + 30_000;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.end();
        resolve();
      });
      s.on("error", () =>
        Date.now() > deadline ? reject(new Error(`port ${port} closed`)) : setTimeout(attempt, 200),
      );
    };
    attempt();
  });
}

async function shot(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const png = await browser.takeScreenshot();
  fs.writeFileSync(path.join(ARTIFACTS, `desktop-${name}.png`), png, "base64");
}

/** The state of the newest bubble with `body`, or null. */
async function stateOf(body) {
  const bubbles = await browser.findElements(By.css(".bubble"));
  for (const b of bubbles.reverse()) {
    const text = await b.findElement(By.css(".body")).getText();
    if (text === body) return b.getAttribute("data-state");
  }
  return null;
}

/** Polls the bubble until `done(state)`; returns every state seen, in order. */
async function watch(body, done, timeout = LONG) {
  const seen = [];
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const s = await stateOf(body);
    if (s && seen[seen.length - 1] !== s) seen.push(s);
    if (s && done(s)) return seen;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`"${body}" never got there; states seen: ${seen.join(" -> ")}`);
}

async function send(body) {
  const input = await browser.findElement(By.css(".composer input[type=text]"));
  await input.sendKeys(body);
  await browser.findElement(By.css(".composer button")).click();
}

function bobRows(direction) {
  return tether(bob.db, "messages", "--direction", direction)
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

/** Polls `f` every 200 ms until it returns something truthy; fails with `what` after LONG. */
async function eventually(f, what) {
  const deadline = Date.now() + LONG;
  let last;
  while (Date.now() < deadline) {
    last = f();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what} never happened`);
}

/** The bubble whose text is `body` (the newest). */
async function bubble(body) {
  return browser.wait(
    until.elementLocated(
      By.xpath(`(//div[contains(@class,'bubble') and .//div[contains(@class,'body') and text()=${JSON.stringify(body)}]])[last()]`),
    ),
    LONG,
  );
}

function bobReceived(body) {
  return tether(bob.db, "messages", "--direction", "in")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((m) => m.body === body).length;
}

before(async () => {
  server = start(path.join(BIN, "tether-demo-server"), ["--hibernation-secs", "3"]);
  ({ value: serverInfo } = await firstJsonLine(server));
  proxy = start(path.join(BIN, "tether-test-proxy"), [serverInfo.addr]);
  const p = await firstJsonLine(proxy);
  proxyAddr = p.value.addr;
  proxy.lines = p.rl;

  bob = { db: path.join(WORK, "bob.db") };
  spawnSync(path.join(BIN, "tether"), ["--db", bob.db, "account", "add", "--jid", "bob@localhost",
    "--password-env", "PW", "--server", serverInfo.addr, "--ca-file", serverInfo.ca_file],
    { env: { ...process.env, PW: "bob" } });
  // Bob's session takes chat states on stdin; its events are kept for the typing test.
  bob.run = start(path.join(BIN, "tether"), ["--db", bob.db, "run", "--stdin"]);
  bob.events = [];
  createInterface({ input: bob.run.stdout }).on("line", (l) => {
    try {
      bob.events.push(JSON.parse(l));
    } catch {
      // not an event line
    }
  });

  driver = start("tauri-driver", ["--port", "4444", "--native-driver", "/usr/bin/WebKitWebDriver"], {
    // The app's log (every event it announces) lands in tauri-driver.log beside the databases.
    env: { ...process.env, TETHER_DB: path.join(WORK, "alice.db"), RUST_LOG: "warn,tether_core=debug" },
  });
  await waitPort(4444);
  browser = await new Builder()
    .withCapabilities({
      browserName: "wry",
      "tauri:options": { application: path.join(BIN, "tether-desktop") },
    })
    .usingServer("http://127.0.0.1:4444/")
    .build();
});

after(async () => {
  // The session's end closes the app; once in a while WebKitWebDriver's quit returns and the app
  // stays (seen once in CI-like runs), and an app left running would hold the driver's output
  // pipe and keep this file from ending. So the quit has 20 s, and an app of this run that is
  // still there afterwards is ended, loudly.
  const quit = browser ? browser.quit().catch((e) => console.error(`quit: ${e}`)) : Promise.resolve();
  await Promise.race([quit, new Promise((r) => setTimeout(r, 20_000))]);
  for (const c of children.reverse()) c.kill("SIGTERM");
  const app = path.join(BIN, "tether-desktop");
  const left = spawnSync("pgrep", ["-f", "-x", app], { encoding: "utf8" }).stdout.trim();
  if (left) {
    console.error(`the app (${left.split("\n").join(", ")}) outlived the session: ended`);
    spawnSync("pkill", ["-f", "-x", app]);
  }
});

test("sign in", async () => {
  const form = await browser.wait(until.elementLocated(By.css("form.signin")), LONG);
  await shot("1-sign-in");
  await form.findElement(By.css("input[name=jid]")).sendKeys("alice@localhost");
  await form.findElement(By.css("input[name=password]")).sendKeys("alice");
  await form.findElement(By.css("details summary")).click();
  await form.findElement(By.css("input[name=server]")).sendKeys(proxyAddr);
  await form.findElement(By.css("input[name=ca]")).sendKeys(serverInfo.ca_file);
  await form.findElement(By.css("button[type=submit]")).click();
  // This machine has no Secret Service: the app must ask before keeping the password elsewhere.
  const ask = await browser.wait(until.elementLocated(By.css("[data-testid=keyring-dialog]")), LONG);
  assert.match(await ask.getText(), /No keyring/);
  await shot("1b-no-keyring");
  await ask.findElement(By.xpath(".//button[text()='Keep it in the database']")).click();
  const bar = await browser.wait(until.elementLocated(By.css("[data-testid=connection]")), LONG);
  await browser.wait(until.elementTextContains(bar, "Online"), LONG);
});

test("a message reaches acked, then delivered", async () => {
  await browser.findElement(By.css("button.new")).click();
  await browser.findElement(By.css(".start input")).sendKeys("bob@localhost");
  await send("Hello Bob");
  const seen = await watch("Hello Bob", (s) => s === "delivered");
  assert.ok(seen.includes("delivered"), seen.join(" -> "));
  assert.ok(!seen.includes("failed"), seen.join(" -> "));
  await shot("2-delivered");
  assert.equal(bobReceived("Hello Bob"), 1);
});

test("a dropped link: hibernated or retrying, then acked", async () => {
  // The link goes silent (nothing reaches the server), then breaks: resumption saves the message.
  await proxyCommand("blackhole-current");
  await send("Through the storm");
  await watch("Through the storm", (s) => s === "sent");
  await proxyCommand("drop");
  const seen = await watch("Through the storm", (s) => ["acked", "delivered"].includes(s));
  assert.ok(
    seen.includes("hibernated") || seen.includes("retrying"),
    `no hibernated/retrying state: ${seen.join(" -> ")}`,
  );
  await shot("3-resumed");
  assert.equal(bobReceived("Through the storm"), 1);
});

test("resumption expires: failed, Retry, confirm, received once", async () => {
  await proxyCommand("blackhole-current");
  await send("Lost in transit");
  await watch("Lost in transit", (s) => s === "sent");
  await proxyCommand("refuse on");
  await proxyCommand("drop");
  await new Promise((r) => setTimeout(r, 6000)); // the server keeps the session 3 s
  await proxyCommand("refuse off");
  await browser.findElement(By.css("[data-testid=connection] button")).click().catch(() => {});
  await watch("Lost in transit", (s) => s === "failed");
  const banner = await browser.wait(until.elementLocated(By.css("[data-testid=failed-banner]")), LONG);
  assert.match(await banner.getText(), /1 message was not sent/);
  assert.equal(bobReceived("Lost in transit"), 0, "it was resent without the user");
  await shot("4-failed");
  const bubble = await browser.findElement(By.css(".bubble[data-state=failed]"));
  await bubble.findElement(By.xpath(".//button[text()='Retry']")).click();
  const dialog = await browser.wait(until.elementLocated(By.css(".modal .card")), LONG);
  const text = await dialog.getText();
  assert.match(text, /Resend this message\?/);
  assert.match(text, /You wrote it (just now|\d+ \w+ ago)/);
  await shot("5-confirm");
  await dialog.findElement(By.xpath(".//button[starts-with(text(), 'Resend')]")).click();
  await watch("Lost in transit", (s) => ["acked", "delivered"].includes(s));
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(bobReceived("Lost in transit"), 1);
  await shot("6-resent");
});

test("an incoming message appears, with a notification when the window is in the background", async () => {
  // The window loses focus (the user is elsewhere).
  await browser.executeScript("document.hasFocus = () => false;");
  tether(bob.db, "send", "--to", "alice@localhost", "--body", "Got everything, thanks!");
  await browser.wait(
    until.elementLocated(By.xpath("//div[contains(@class,'bubble') and contains(., 'Got everything, thanks!')]")),
    LONG,
  );
  const requested = await browser.executeScript("return document.body.dataset.notifications");
  assert.equal(requested, "1", "no notification was requested");
  await shot("7-received");
});

test("reading a conversation sends displayed markers", async () => {
  // Open another conversation and come back to bob's, with the window in front.
  await browser.executeScript("document.hasFocus = () => true;");
  await browser.findElement(By.css("button.new")).click();
  await browser.findElement(By.xpath("//li[.//span[text()='bob@localhost']]")).click();
  const deadline = Date.now() + LONG;
  let state = null;
  while (Date.now() < deadline) {
    const rows = tether(bob.db, "messages", "--direction", "out").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    state = rows.find((m) => m.body === "Got everything, thanks!")?.state;
    if (state === "displayed") break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(state, "displayed", "bob never learnt that alice read his message");
});

test("the last message is edited with the up arrow: bob shows the new text once", async () => {
  await send("Helo agian");
  await watch("Helo agian", (s) => ["acked", "delivered", "displayed"].includes(s));
  const input = await browser.findElement(By.css(".composer input[type=text]"));
  await input.sendKeys(Key.ARROW_UP);
  await browser.wait(until.elementLocated(By.css("[data-testid=editing]")), LONG);
  // The composer takes the text on its next render: wait for it, then check it.
  await browser.wait(async () => (await input.getAttribute("value")) === "Helo agian", LONG).catch(() => {});
  assert.equal(await input.getAttribute("value"), "Helo agian", "the composer holds the text");
  // Replace the text (WebKitWebDriver has no select-all chord): one backspace per character.
  await input.sendKeys(...Array("Helo agian".length).fill(Key.BACK_SPACE), "Hello again");
  await browser.findElement(By.css(".composer button")).click();
  const b = await bubble("Hello again");
  await b.findElement(By.css("button.edited"));
  const row = await eventually(
    () => bobRows("in").find((m) => m.body === "Hello again" && m.edited && m.action === null),
    "bob showing the correction",
  );
  assert.equal(bobRows("in").filter((m) => m.action === "correct").length, 1, "one correction at bob");
  await b.findElement(By.css("button.edited")).click();
  const hist = await browser.wait(until.elementLocated(By.css("[data-testid=edit-history]")), LONG);
  assert.match(await hist.getText(), /Helo agian[\s\S]*Hello again/);
  await shot("11-edited");
  await hist.findElement(By.xpath(".//button[text()='Close']")).click();
  assert.ok(row.id);
});

test("a reaction and a reply from the window reach bob once, the reply quoting his message", async () => {
  const theirs = await bubble("Got everything, thanks!");
  await theirs.findElement(By.css("[data-action=react]")).click();
  await theirs.findElement(By.css("[data-testid=picker] [data-emoji='👍']")).click();
  await browser.wait(
    until.elementLocated(By.xpath("//div[contains(@class,'bubble') and contains(., 'Got everything')]//button[contains(@class,'reaction') and @data-emoji='👍']")),
    LONG,
  );
  await eventually(
    () => bobRows("out").find((m) => m.body === "Got everything, thanks!" && m.reactions.some((r) => r.emoji === "👍" && r.count === 1)),
    "bob seeing alice's reaction",
  );
  await shot("12-reacted");
  await (await bubble("Got everything, thanks!")).findElement(By.css("[data-action=reply]")).click();
  await browser.wait(until.elementLocated(By.css("[data-testid=replying]")), LONG);
  await send("You're welcome");
  const reply = await bubble("You're welcome");
  assert.match(await reply.findElement(By.css("[data-testid=quote]")).getText(), /Got everything, thanks!/);
  const atBob = await eventually(
    () => bobRows("in").find((m) => m.body === "You're welcome"),
    "bob receiving the reply",
  );
  assert.equal(atBob.reply_to?.body, "Got everything, thanks!", "bob quotes his own copy");
  assert.equal(bobRows("in").filter((m) => m.body === "You're welcome").length, 1);
  await shot("13-reply");
});

test("a message retracted from the window is retracted at bob", async () => {
  await send("Oops, wrong chat");
  await watch("Oops, wrong chat", (s) => ["acked", "delivered", "displayed"].includes(s));
  await (await bubble("Oops, wrong chat")).findElement(By.css("[data-action=retract]")).click();
  await bubble("This message was retracted");
  await eventually(
    () => bobRows("in").find((m) => m.body === "Oops, wrong chat" && m.retracted),
    "bob seeing the retraction",
  );
  await shot("14-retracted");
});

test("typing shows in the window, stops by itself, and alice's typing reaches bob", async () => {
  bob.run.stdin.write(`${JSON.stringify({ to: "alice@localhost", chat_state: "composing" })}\n`);
  const line = await browser.wait(until.elementLocated(By.css("[data-testid=typing]")), LONG);
  await browser.wait(until.elementTextContains(line, "bob@localhost is typing"), LONG);
  await shot("15-typing");
  // Bob's core turns composing into paused by itself after 5 s.
  await browser.wait(until.elementTextContains(line, "stopped typing"), LONG);
  const aliceTyping = () =>
    bob.events.filter((e) => e.event === "chat:state" && e.from === "alice@localhost" && e.state === "composing").length;
  const before = aliceTyping();
  const input = await browser.findElement(By.css(".composer input[type=text]"));
  await input.sendKeys("th");
  await eventually(() => aliceTyping() > before, `bob seeing alice typing (logs in ${WORK})`);
  assert.equal(
    bobRows("in").filter((m) => m.body === "" && m.action === null).length,
    0,
    "no chat state was stored",
  );
  await input.sendKeys(Key.BACK_SPACE, Key.BACK_SPACE);
});

test("a picture sent from the window shows progress and a preview; bob gets it once, hash checked", async () => {
  // A real PNG of noise (about 2 MB: it does not compress), written with Python's zlib.
  const pic = path.join(WORK, "noise.png");
  const made = spawnSync("python3", ["-c", `
import os, struct, sys, zlib
w, h = 900, 700
raw = b"".join(b"\\x00" + os.urandom(w * 3) for _ in range(h))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
`, pic], { encoding: "utf8" });
  assert.equal(made.status, 0, made.stderr);
  const sha = (await import("node:crypto")).createHash("sha256").update(fs.readFileSync(pic)).digest("hex");
  // An error the window would show in an alert is kept for the failure message instead.
  await browser.executeScript("window.alert = (m) => { document.body.dataset.alerts = (document.body.dataset.alerts || '') + m + '\\n'; };");
  await browser.findElement(By.css("[data-testid=attach]")).sendKeys(pic);
  await browser
    .wait(until.elementLocated(By.css("[data-testid=file]")), LONG)
    .catch(async (e) => {
      const alerts = await browser.executeScript("return document.body.dataset.alerts");
      throw new Error(`no file card (${e.message}); the window said: ${alerts}`);
    });
  await browser.wait(
    until.elementLocated(By.css("[data-testid=file][data-transfer=uploaded] img.preview")),
    LONG,
  );
  // The preview is the picture itself, decoded (not a broken image with its alt text).
  const decoded = await browser
    .wait(
      () => browser.executeScript("const i = document.querySelector('img.preview'); return i && i.complete && i.naturalWidth;"),
      LONG,
    )
    .catch(async () => {
      const shape = await browser.executeAsyncScript(`
        const done = arguments[arguments.length - 1];
        const id = document.querySelector("[data-testid=file]").closest(".bubble").dataset.id;
        window.__TAURI_INTERNALS__.invoke("file_bytes", { peer: "bob@localhost", id })
          .then((r) => done(Object.prototype.toString.call(r) + " " + (r.byteLength ?? r.length)), (e) => done("error " + JSON.stringify(e)));`);
      throw new Error(`the preview never decoded; file_bytes answers ${shape}`);
    });
  assert.equal(decoded, 900, "the preview shows the 900-pixel-wide picture");
  const progressEvents = await browser.executeScript("return document.body.dataset.progressEvents");
  assert.ok(Number(progressEvents) > 0, "the window was never told of the upload's progress");
  // Waits for bob's download (an empty list is truthy: it would not wait), then a moment more,
  // so that a second copy arriving late would be counted.
  await eventually(
    () => bobRows("in").some((m) => m.file?.name === "noise.png" && m.file.transfer === "downloaded"),
    "bob fetching the picture",
  );
  await new Promise((r) => setTimeout(r, 1000));
  const got = bobRows("in").filter((m) => m.file?.name === "noise.png" && m.file.transfer === "downloaded");
  assert.equal(got.length, 1, "one message with the file");
  assert.equal(got[0].file.sha256, sha, "the bytes sent, checked against the announced hash");
  await shot("16-picture");
});

test("a subscription request is accepted from the window", async () => {
  tether(bob.db, "subscribe", "--jid", "alice@localhost");
  const card = await browser.wait(until.elementLocated(By.css(".request")), LONG);
  assert.match(await card.getText(), /bob@localhost wants to see when you are online/);
  await shot("9-subscription-request");
  await card.findElement(By.xpath(".//button[text()='Accept']")).click();
  // Accepting also asks back; bob's client (who asked first) approves: both subscribed.
  await browser.wait(
    until.elementLocated(By.xpath("//ul[contains(@class,'people')]/li[contains(., 'bob@localhost') and not(contains(., 'waiting'))]")),
    LONG,
  );
  const deadline = Date.now() + LONG;
  let sub = null;
  while (Date.now() < deadline) {
    const c = tether(path.join(WORK, "alice.db"), "contacts").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    sub = c.find((x) => x.jid === "bob@localhost")?.subscription;
    if (sub === "both") break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(sub, "both");
});

test("a room is joined from the window", async () => {
  await browser.findElement(By.css(".join-link")).click();
  const form = await browser.findElement(By.css("form.join"));
  await form.findElement(By.css("input[name=room]")).sendKeys("lounge@conference.localhost");
  await form.findElement(By.css("button[type=submit]")).click();
  await browser.wait(
    until.elementLocated(By.xpath("//ul[contains(@class,'people')]/li[contains(., 'lounge@conference.localhost')]/span[contains(@class,'dot') and contains(@class,'on')]")),
    LONG,
  );
  await send("Hello room");
  await watch("Hello room", (s) => s === "reflected");
  await shot("10-room");
});

test("a conversation of 100,000 messages opens fast and keeps the DOM small", async () => {
  // 100,000 incoming messages from carol, written straight into alice's store (test data only).
  const seed = spawnSync("python3", ["-c", `
import sqlite3, sys, time, uuid
db = sqlite3.connect(sys.argv[1], timeout=30)
now = int(time.time() * 1000)
acc = db.execute("SELECT id FROM accounts").fetchone()[0]
rows = [(str(uuid.uuid4()), acc, "carol@localhost", "in", f"message {i} from the archive of a long friendship",
         "displayed", now - (100000 - i) * 1000, now) for i in range(100000)]
db.executemany("INSERT INTO messages (id, account_id, peer, direction, body, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)", rows)
db.commit()
`, path.join(WORK, "alice.db")], { encoding: "utf8" });
  assert.equal(seed.status, 0, seed.stderr);
  await browser.executeScript("location.reload()");
  const item = await browser.wait(until.elementLocated(By.xpath("//li[.//span[text()='carol@localhost']]")), LONG);
  const t0 = Date.now();
  await item.click();
  await browser.wait(
    until.elementLocated(By.xpath("//div[contains(@class,'bubble') and contains(., 'message 99999 from')]")),
    LONG,
  );
  const openMs = Date.now() - t0;
  // Scroll back through ten pages: rows page in from the store, the DOM stays small.
  for (let i = 0; i < 10; i++) {
    await browser.executeScript("document.querySelector('[data-testid=messages]').scrollTop = 0;");
    await new Promise((r) => setTimeout(r, 300));
  }
  const inDom = (await browser.findElements(By.css(".bubble"))).length;
  const oldest = await browser.executeScript(
    "return Math.min(...[...document.querySelectorAll('.bubble .body')].map(b => Number(b.textContent.split(' ')[1])))",
  );
  console.log(`100k conversation: opened in ${openMs} ms; after 10 scrolls to the top ${inDom} bubbles in the DOM, oldest shown #${oldest}`);
  assert.ok(inDom < 150, `${inDom} bubbles in the DOM: not virtualised`);
  assert.ok(oldest < 99950, `history did not page in (oldest shown #${oldest})`);
  await shot("8-long-history");
});

test("search finds a message deep in a long history and jumps to it", async () => {
  // The 100,000 messages above went in through SQLite's own triggers, so they are indexed.
  const box = await browser.findElement(By.css("[data-testid=search]"));
  await box.sendKeys("friendship 12345");
  const hit = await browser.wait(until.elementLocated(By.css("[data-testid=search-hit]")), LONG);
  await browser.wait(async () => (await hit.getText()).includes("message 12345 from"), LONG);
  const hits = await browser.findElements(By.css("[data-testid=search-hit]"));
  assert.equal(hits.length, 1, "one message has both words");
  await shot("17-search-results");
  await hit.click();
  const found = await browser.wait(until.elementLocated(By.css(".bubble[data-found=true]")), LONG);
  assert.match(await found.getText(), /message 12345 from the archive/);
  await browser.findElement(By.css("[data-testid=found-banner]"));
  // The page ends with the hit: nothing newer is shown, older rows are.
  const shown = await browser.executeScript(
    "return [...document.querySelectorAll('.bubble .body')].map(b => Number(b.textContent.split(' ')[1]))",
  );
  assert.equal(Math.max(...shown), 12345, `newest row shown: ${Math.max(...shown)}`);
  assert.ok(Math.min(...shown) < 12345, "older rows are shown above the hit");
  await shot("18-search-jump");
  await browser.findElement(By.css("[data-testid=found-banner] button")).click();
  await browser.wait(
    until.elementLocated(By.xpath("//div[contains(@class,'bubble') and contains(., 'message 99999 from')]")),
    LONG,
  );
  assert.equal((await browser.findElements(By.css("[data-testid=found-banner]"))).length, 0);

  // The words are never query syntax; a query the core refuses says why.
  await box.sendKeys(...Array("friendship 12345".length).fill(Key.BACK_SPACE), '"friendship (long 9999');
  await browser.wait(async () => {
    const items = await browser.findElements(By.css("[data-testid=search-hit]"));
    return items.length > 0 && (await items[0].getText()).includes("friendship");
  }, LONG);
  await box.sendKeys(...Array('"friendship (long 9999'.length).fill(Key.BACK_SPACE), "a ".repeat(17));
  const refused = await browser.wait(until.elementLocated(By.css("[data-testid=search-error]")), LONG);
  assert.match(await refused.getText(), /at most 16 words/);
  await shot("19-search-refused");
});

test("a message from the archive shows the day and time it was written, not when it arrived", async () => {
  // A message stamped three days ago (its <delay/>) that reached this store just now.
  const written = Date.now() - 3 * 86_400_000;
  const seed = spawnSync("python3", ["-c", `
import sqlite3, sys, time, uuid
db = sqlite3.connect(sys.argv[1], timeout=30)
acc = db.execute("SELECT id FROM accounts").fetchone()[0]
now = int(time.time() * 1000)
db.execute("INSERT INTO messages (id, account_id, peer, direction, body, state, created_at, updated_at, server_ts) VALUES (?,?,?,?,?,?,?,?,?)",
           (str(uuid.uuid4()), acc, "dave@localhost", "in", "written three days ago", "received", now, now, int(sys.argv[2])))
db.commit()
`, path.join(WORK, "alice.db"), String(written)], { encoding: "utf8" });
  assert.equal(seed.status, 0, seed.stderr);
  await browser.executeScript("location.reload()");
  const item = await browser.wait(until.elementLocated(By.xpath("//li[.//span[text()='dave@localhost']]")), LONG);
  await item.click();
  const b = await bubble("written three days ago");
  const stamp = await b.findElement(By.css("time")).getAttribute("datetime");
  assert.equal(stamp, new Date(written).toISOString(), "the bubble's time is the sender's");
  const day = await browser.findElement(By.css("[data-testid=day]")).getText();
  assert.doesNotMatch(day, /Today|Yesterday/, `the day separator says ${day}`);
  assert.ok(day.includes(String(new Date(written).getDate())), `the day separator says ${day}`);
  await shot("20-history-day");
});

test("a contact blocked from the window is told to the server, shows nothing, and is unblocked", async () => {
  const alice = path.join(WORK, "alice.db");
  const open = await browser.wait(
    until.elementLocated(By.xpath("//ul[contains(@class,'conversations')]/li[.//span[text()='bob@localhost']]")),
    LONG,
  );
  await open.click();
  await (await browser.wait(until.elementLocated(By.css("[data-testid=block]")), LONG)).click();
  // Blocked here at once; the banner says so until the server has confirmed it, then says only that.
  const banner = await browser.wait(
    until.elementLocated(By.css("[data-testid=blocked-banner][data-state=confirmed]")),
    LONG,
  );
  assert.match(await banner.getText(), /You blocked bob@localhost/);
  const listed = await browser.findElement(By.css("[data-testid=blocked-list]")).getText();
  assert.match(listed, /bob@localhost/);
  const input = await browser.findElement(By.css(".composer input[type=text]"));
  assert.equal(await input.isEnabled(), false, "nothing can be written to a blocked contact");
  await shot("21-blocked");
  // Bob writes: once the server has his message (acked), it has been dropped or bounced, and
  // nothing of it reaches the window or alice's store.
  const id = tether(bob.db, "send", "--to", "alice@localhost", "--body", "written while blocked").trim();
  await eventually(() => {
    const row = bobRows("out").find((m) => m.id === id);
    return row && !["queued", "sent", "hibernated", "retrying"].includes(row.state);
  }, "bob's message settled at the server");
  await new Promise((r) => setTimeout(r, 2000));
  const stored = tether(alice, "messages", "--direction", "in", "--peer", "bob@localhost");
  assert.doesNotMatch(stored, /written while blocked/);
  assert.equal((await browser.findElements(By.xpath("//div[contains(@class,'body') and text()='written while blocked']"))).length, 0);
  // Unblocked from the banner: told to the server, and bob's next message shows once.
  await banner.findElement(By.xpath(".//button[text()='Unblock']")).click();
  await eventually(() => !tether(alice, "blocklist").includes("bob@localhost"), "the unblock confirmed");
  await browser.wait(async () => (await browser.findElements(By.css("[data-testid=blocked-banner]"))).length === 0, LONG);
  tether(bob.db, "send", "--to", "alice@localhost", "--body", "written after the unblock");
  await bubble("written after the unblock");
  assert.equal(await browser.findElement(By.css(".composer input[type=text]")).isEnabled(), true);
  await shot("22-unblocked");
});

test("a /me action shows as its sender's, and a room nick has its XEP-0392 colour", async () => {
  tether(bob.db, "send", "--to", "alice@localhost", "--body", "/me waves at the window");
  await (await browser.wait(
    until.elementLocated(By.xpath("//ul[contains(@class,'conversations')]/li[.//span[@title='bob@localhost']]")),
    LONG,
  )).click();
  const me = await browser.wait(
    until.elementLocated(By.xpath("//div[@data-me='true' and contains(., 'waves at the window')]")),
    LONG,
  );
  assert.equal(await me.getText(), "* bob@localhost waves at the window");
  // The list shows the action too, once it has reloaded.
  const lastOfBob = By.xpath("//ul[contains(@class,'conversations')]/li[.//span[@title='bob@localhost']]//div[contains(@class,'last')]");
  await browser.wait(
    async () =>
      (await (await browser.findElement(lastOfBob)).getAttribute("textContent")) === "* bob@localhost waves at the window",
    LONG,
    "the conversation list shows the /me action",
  );
  // Bob joins alice's room (his running client takes the join from the store) and writes there.
  const room = "lounge@conference.localhost";
  tether(bob.db, "room", "join", room, "--nick", "bob");
  tether(bob.db, "send", "--to", room, "--body", "bob in the room");
  await (await browser.findElement(By.xpath(`//ul[contains(@class,'people')]/li[contains(., '${room}')]`))).click();
  const b = await bubble("bob in the room");
  const nick = await b.findElement(By.css(".nick"));
  assert.equal(await nick.getText(), "bob");
  // An independent check of XEP-0392: the hue of the colour shown is SHA-1's first two bytes
  // (little-endian) scaled to a circle, computed here with Node's own crypto.
  const [r, g, bl] = (await nick.getCssValue("color")).match(/\d+/g).map(Number);
  const { Hsluv } = await import("hsluv");
  const conv = new Hsluv();
  conv.rgb_r = r / 255;
  conv.rgb_g = g / 255;
  conv.rgb_b = bl / 255;
  conv.rgbToHsluv();
  const { createHash } = await import("node:crypto");
  const d = createHash("sha1").update("bob").digest();
  const want = ((d[0] | (d[1] << 8)) / 65536) * 360;
  assert.ok(Math.abs(conv.hsluv_h - want) < 1.5, `hue ${conv.hsluv_h}, XEP-0392 says ${want}`);
  await shot("23-me-and-nick-colour");
});

test("a second account: the switcher shows both, the list is unified, a row opens its own account", async () => {
  await (await browser.findElement(By.css("[data-testid=add-account]"))).click();
  const form = await browser.wait(until.elementLocated(By.css("form.signin")), LONG);
  assert.match(await form.getText(), /Add an account/);
  await form.findElement(By.css("input[name=jid]")).sendKeys("carol@localhost");
  await form.findElement(By.css("input[name=password]")).sendKeys("carol");
  await form.findElement(By.css("details summary")).click();
  await form.findElement(By.css("input[name=server]")).sendKeys(serverInfo.addr);
  await form.findElement(By.css("input[name=ca]")).sendKeys(serverInfo.ca_file);
  await form.findElement(By.css("button[type=submit]")).click();
  const ask = await browser.wait(until.elementLocated(By.css("[data-testid=keyring-dialog]")), LONG);
  await ask.findElement(By.xpath(".//button[text()='Keep it in the database']")).click();
  // Both accounts listed, each online on its own session; the view is in carol's.
  const account = (jid) => By.xpath(`//li[@data-testid='account'][.//span[@class='jid' and text()='${jid}']]`);
  // An attribute of the account's row, or null while the row is not there yet.
  // The switcher re-renders on every account event: a row found can be replaced before it is
  // read, which reads as "not yet" and is looked up again.
  const attr = async (jid, name) => {
    const rows = await browser.findElements(account(jid));
    try {
      return rows.length ? await rows[0].getAttribute(name) : null;
    } catch (e) {
      if (e.name === "StaleElementReferenceError") return null;
      throw e;
    }
  };
  for (const jid of ["alice@localhost", "carol@localhost"]) {
    await browser.wait(
      async () => (await attr(jid, "data-state")) === "online",
      LONG,
      `${jid} online`,
    );
  }
  assert.match(await (await browser.findElement(account("carol@localhost"))).getAttribute("class"), /active/);
  // Back in alice's view, bob writes to carol: the unified list shows it, marked as carol's.
  await (await browser.findElement(account("alice@localhost"))).click();
  await browser.wait(
    async () => /active/.test((await attr("alice@localhost", "class")) ?? ""),
    LONG,
  );
  tether(bob.db, "send", "--to", "carol@localhost", "--body", "hello carol, from bob");
  const carolsRow = By.xpath("//li[@data-testid='conversation' and @data-account='carol@localhost']");
  const row = await browser.wait(until.elementLocated(carolsRow), LONG);
  assert.match(await row.getAttribute("textContent"), /hello carol, from bob/);
  const alicesRows = await browser.findElements(By.xpath("//li[@data-testid='conversation' and @data-account='alice@localhost']"));
  assert.ok(alicesRows.length > 0, "alice's conversations are in the same list");
  await shot("24-two-accounts-unified-list");
  // The row opens carol's conversation in carol's account; her reply goes from carol.
  await row.click();
  await bubble("hello carol, from bob");
  assert.match(await (await browser.findElement(account("carol@localhost"))).getAttribute("class"), /active/);
  await send("hi bob, carol here");
  await eventually(
    () =>
      tether(bob.db, "messages", "--direction", "in", "--peer", "carol@localhost")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .filter((m) => m.body === "hi bob, carol here").length === 1,
    "bob has carol's reply once",
  );
  await shot("25-account-switched");
  // Disabling carol ends her session only; alice stays online.
  await (await browser.findElement(By.css("[data-testid=toggle-account]"))).click();
  await browser.wait(
    async () => (await attr("carol@localhost", "data-state")) === "disabled",
    LONG,
    "carol disabled",
  );
  assert.equal(await (await browser.findElement(account("alice@localhost"))).getAttribute("data-state"), "online");
  await shot("26-account-disabled");
  await (await browser.findElement(By.css("[data-testid=toggle-account]"))).click();
  await browser.wait(
    async () => (await attr("carol@localhost", "data-state")) === "online",
    LONG,
    "carol online again",
  );
});

test("an account is created from the window: the server's refusal is shown, then the new account signs in", async () => {
  await (await browser.findElement(By.css("[data-testid=add-account]"))).click();
  const form = await browser.wait(until.elementLocated(By.css("form.signin")), LONG);
  await form.findElement(By.css("[data-testid=create-account]")).click();
  await browser.wait(until.elementLocated(By.css("form.signin[data-mode=create] input[name=invite]")), LONG);
  await form.findElement(By.css("input[name=jid]")).sendKeys("erin@localhost");
  const password = await form.findElement(By.css("input[name=password]"));
  await password.sendKeys("short");
  await form.findElement(By.css("details summary")).click();
  await form.findElement(By.css("input[name=server]")).sendKeys(serverInfo.addr);
  await form.findElement(By.css("input[name=ca]")).sendKeys(serverInfo.ca_file);
  const submit = async () => {
    await form.findElement(By.css("button[type=submit]")).click();
    const ask = await browser.wait(until.elementLocated(By.css("[data-testid=keyring-dialog]")), LONG);
    await ask.findElement(By.xpath(".//button[text()='Keep it in the database']")).click();
  };
  await submit();
  const error = await browser.wait(until.elementLocated(By.css("form.signin .error")), LONG);
  assert.match(await error.getText(), /refused to create this account: Password is too short \(minimum 8 characters\)/);
  await shot("27-sign-up-refused");
  await password.clear();
  await password.sendKeys("a long enough password");
  await submit();
  const erin = By.xpath("//li[@data-testid='account'][.//span[@class='jid' and text()='erin@localhost']]");
  await browser.wait(
    async () => {
      const rows = await browser.findElements(erin);
      return rows.length > 0 && (await rows[0].getAttribute("data-state")) === "online";
    },
    LONG,
    "erin's new account online",
  );
  await shot("28-signed-up");
});

test("a room shows who is in it, as the room says", async () => {
  // alice's view (bob joined the lounge in an earlier test and is still there).
  const aliceRow = By.xpath("//li[@data-testid='account'][.//span[@class='jid' and text()='alice@localhost']]");
  const row = await browser.findElement(aliceRow);
  if (!/active/.test(await row.getAttribute("class"))) await row.click();
  const room = "lounge@conference.localhost";
  await (await browser.wait(
    until.elementLocated(By.xpath(`//ul[contains(@class,'people')]/li[contains(., '${room}')]`)),
    LONG,
  )).click();
  await browser.wait(
    async () => {
      const names = await Promise.all(
        (await browser.findElements(By.css("[data-testid=occupant]"))).map((o) => o.getAttribute("textContent")),
      );
      return names.join(",") === "alice,bob";
    },
    LONG,
    "the occupant list shows alice and bob",
  );
  await shot("29-room-occupants");
});

test("an invitation to a room is joined from its bubble, and one is sent from a room", async () => {
  const party = "party@conference.localhost";
  tether(bob.db, "room", "join", party, "--nick", "bob");
  tether(bob.db, "invite", "--room", party, "--to", "alice@localhost", "--reason", "a party");
  await (await browser.wait(
    until.elementLocated(By.xpath("//ul[contains(@class,'conversations')]/li[@data-account='alice@localhost'][.//span[@title='bob@localhost']]")),
    LONG,
  )).click();
  const card = await browser.wait(until.elementLocated(By.css(`[data-testid=invite][data-room='${party}']`)), LONG);
  await shot("30-invitation");
  await card.findElement(By.css("[data-testid=join-invite]")).click();
  const roomRow = By.xpath(`//ul[contains(@class,'people')]/li[contains(., '${party}')]`);
  await (await browser.wait(until.elementLocated(roomRow), LONG)).click();
  await browser.wait(
    async () => {
      const names = await Promise.all(
        (await browser.findElements(By.css("[data-testid=occupant]"))).map((o) => o.getAttribute("textContent")),
      );
      return names.includes("alice") && names.includes("bob");
    },
    LONG,
    "alice is in the party with bob",
  );
  // Alice invites carol (her other account) from the room.
  await (await browser.findElement(By.css("[data-testid=invite-to]"))).sendKeys("carol@localhost", Key.ENTER);
  await browser.wait(
    until.elementLocated(By.xpath(`//li[@data-testid='conversation' and @data-account='carol@localhost']`)),
    LONG,
  );
  await eventually(
    () => {
      const r = spawnSync(path.join(BIN, "tether"), ["--db", path.join(WORK, "alice.db"), "--account", "carol@localhost",
        "messages", "--direction", "in", "--peer", "alice@localhost"], { encoding: "utf8" });
      return r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l)).some((m) => m.invite === party);
    },
    "carol's account got alice's invitation",
  );
  await shot("31-room-with-invite");
});

test("avatars and nicknames: bob's show in the list and the chat, alice's own is set from the window and reaches bob", async () => {
  const { createHash } = await import("node:crypto");
  const sha1 = (bytes) => createHash("sha1").update(bytes).digest("hex");
  // Two real 16×16 PNGs (bob's a checkerboard, alice's two triangles), written by Python's zlib.
  const bobPng = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAJElEQVR42mP40CMCR3I2C+AIlzjDINRAjCJk8cGoYTQeBoUGAPUvRRBW30IXAAAAAElFTkSuQmCC",
    "base64",
  );
  const alicePng = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAUElEQVR42pXLSQ0AIAwF0cqpYkQgBzmcIIGwdvlN5viGEudQFNK1MIV0YBgaHZaGhlP7w6Od4dfWIGp10LQ8GFoYbP0Orr4GRO8B1HPAda8BdxqpsD6tV78AAAAASUVORK5CYII=",
    "base64",
  );
  const bobPic = path.join(WORK, "bob-avatar.png");
  const alicePic = path.join(WORK, "alice-avatar.png");
  fs.writeFileSync(bobPic, bobPng);
  fs.writeFileSync(alicePic, alicePng);
  // alice's store has carol's and erin's accounts too (the earlier tests): each call names hers.
  const aliceCli = (...args) => tether(path.join(WORK, "alice.db"), "--account", "alice@localhost", ...args);
  // alice's view (bob is her contact, subscribed both ways since the subscription test; her roster
  // gives him no name, so his published nickname is what shows).
  const aliceRow = By.xpath("//li[@data-testid='account'][.//span[@class='jid' and text()='alice@localhost']]");
  const account = await browser.findElement(aliceRow);
  if (!/active/.test(await account.getAttribute("class"))) await account.click();
  const roster = JSON.parse(
    aliceCli("contacts").split("\n").find((l) => l.includes('"bob@localhost"')),
  );
  assert.equal(roster.name, null, "alice's roster names bob: his nickname would not show");
  assert.equal(roster.subscription, "both");

  // Bob sets his nickname and avatar beside his running session, which publishes them.
  const set = JSON.parse(tether(bob.db, "profile", "set", "--nick", "Bobby Tables", "--avatar", bobPic));
  assert.equal(set.avatar, sha1(bobPng));
  // An avatar shown is an <img> whose data: URL holds exactly his bytes, decoded by the webview.
  const isAvatar = async (img, bytes) => {
    const src = await img.getAttribute("src");
    const [head, data] = src.split(",");
    return (
      head === "data:image/png;base64" &&
      Buffer.from(data, "base64").equals(bytes) &&
      (await browser.executeScript("return arguments[0].complete && arguments[0].naturalWidth", img)) === 16
    );
  };
  const bobsRow = "//ul[contains(@class,'conversations')]/li[@data-account='alice@localhost'][.//span[@title='bob@localhost']]";
  await browser.wait(
    async () => {
      const imgs = await browser.findElements(By.xpath(`${bobsRow}//img[@data-testid='avatar']`));
      return imgs.length === 1 && (await isAvatar(imgs[0], bobPng));
    },
    LONG,
    `bob's avatar in his row of the conversation list (logs in ${WORK})`,
  );
  // The list may be longer than the window: its text is read whether scrolled into view or not.
  const text = async (e) => (await e.getAttribute("textContent")).trim();
  await browser.wait(
    async () => (await text(await browser.findElement(By.xpath(`${bobsRow}//span[@class='peer']`)))) === "Bobby Tables",
    LONG,
    "bob's nickname in his row of the conversation list",
  );
  const contact = await browser.findElement(
    By.xpath("//ul[contains(@class,'people')]/li[.//img[@data-testid='avatar' and @data-jid='bob@localhost']]"),
  );
  assert.equal(await text(contact), "Bobby Tables");
  assert.ok(await isAvatar(await contact.findElement(By.css("img")), bobPng), "bob's avatar in the contacts");
  await (await browser.findElement(By.xpath(bobsRow))).click();
  const header = await browser.wait(
    until.elementLocated(By.xpath("//section[contains(@class,'conversation')]/h2[@title='bob@localhost']")),
    LONG,
  );
  await browser
    .wait(async () => (await text(header)).startsWith("Bobby Tables"), LONG)
    .catch(async () => assert.fail(`the chat header says ${JSON.stringify(await text(header))}`));
  assert.ok(await isAvatar(await header.findElement(By.css("img[data-testid=avatar]")), bobPng), "bob's avatar in the header");
  await shot("32-avatars");

  // Alice sets her nickname and avatar in the Profile dialog.
  await (await browser.findElement(By.css("[data-testid=profile-button]"))).click();
  const dialog = await browser.wait(until.elementLocated(By.css("[data-testid=profile-dialog]")), LONG);
  const ownName = await dialog.findElement(By.css("[data-testid=own-name]"));
  assert.equal(await ownName.getText(), "alice@localhost");
  assert.equal(
    (await dialog.findElements(By.css("img[data-testid=own-avatar]"))).length,
    0,
    "alice has no avatar yet",
  );
  await (await dialog.findElement(By.css("[data-testid=nick]"))).sendKeys("Alice in Tetherland");
  await (await dialog.findElement(By.css("[data-testid=save-nick]"))).click();
  await browser.wait(until.elementTextIs(ownName, "Alice in Tetherland"), LONG);
  const pathInput = await dialog.findElement(By.css("[data-testid=avatar-path]"));
  await pathInput.sendKeys(alicePic);
  await (await dialog.findElement(By.css("[data-testid=set-avatar]"))).click();
  const own = By.css("[data-testid=profile-dialog] img[data-testid=own-avatar]");
  await browser.wait(
    async () => {
      const imgs = await browser.findElements(own);
      return imgs.length === 1 && (await isAvatar(imgs[0], alicePng));
    },
    LONG,
    "alice's own avatar in the dialog",
  );
  assert.equal((await dialog.findElements(By.css("[data-testid=profile-error]"))).length, 0);
  assert.equal(await (await browser.findElement(own)).getAttribute("data-avatar"), sha1(alicePng));
  // Bob's store receives both, and the very bytes.
  const atBob = await eventually(() => {
    const p = JSON.parse(tether(bob.db, "profile", "show", "--jid", "alice@localhost"));
    return p.avatar === sha1(alicePng) && p.nick === "Alice in Tetherland" && p;
  }, `bob's store having alice's avatar and nickname (logs in ${WORK})`);
  assert.equal(atBob.avatar_mime, "image/png");
  const fetched = path.join(WORK, "alice-at-bob.png");
  tether(bob.db, "profile", "avatar", "--jid", "alice@localhost", "--out", fetched);
  assert.ok(fs.readFileSync(fetched).equals(alicePng), "bob has alice's avatar's bytes");
  await eventually(() => JSON.parse(aliceCli("profile", "show")).told, "alice's changes confirmed by her server");
  // The dialog says so too (it asks until the server has confirmed).
  await browser
    .wait(until.elementLocated(By.css("[data-testid=profile-state][data-told=true]")), LONG)
    .catch(async () => {
      const state = await browser.findElements(By.css("[data-testid=profile-state]"));
      assert.fail(`the dialog says ${state.length ? JSON.stringify(await state[0].getText()) : "nothing of the server"}`);
    });

  // What the core refuses is said in the dialog, and the avatar stays: a picture too large
  // through the picker, then a text file by its path.
  const big = path.join(WORK, "too-big.png");
  fs.writeFileSync(big, Buffer.concat([bobPng, Buffer.alloc(600 * 1024)]));
  await (await dialog.findElement(By.css("[data-testid=avatar-file]"))).sendKeys(big);
  const error = await browser.wait(until.elementLocated(By.css("[data-testid=profile-error]")), LONG);
  await browser
    .wait(until.elementTextContains(error, "more than the 131072"), LONG)
    .catch(async () => assert.fail(`the dialog says ${JSON.stringify(await error.getText())}`));
  const txt = path.join(WORK, "not-a-picture.txt");
  fs.writeFileSync(txt, "just some words, not a picture\n");
  await pathInput.sendKeys(...Array(alicePic.length).fill(Key.BACK_SPACE), txt);
  await (await dialog.findElement(By.css("[data-testid=set-avatar]"))).click();
  await browser.wait(
    async () => {
      const shown = await browser.findElements(By.css("[data-testid=profile-error]"));
      return shown.length === 1 && /not an image/.test(await shown[0].getText());
    },
    LONG,
    "the dialog saying the text file is not an image",
  );
  assert.ok(await isAvatar(await browser.findElement(own), alicePng), "the avatar is unchanged");
  assert.equal(JSON.parse(aliceCli("profile", "show")).avatar, sha1(alicePng));
  assert.equal(JSON.parse(tether(bob.db, "profile", "show", "--jid", "alice@localhost")).avatar, sha1(alicePng));
  await shot("33-own-profile");
  await (await dialog.findElement(By.css("[data-testid=close-profile]"))).click();
});

test("bookmarks across two devices: a room joined on alice's phone appears in the window, and one left in the window is left on the phone", async () => {
  // alice's view.
  const aliceRow = By.xpath("//li[@data-testid='account'][.//span[@class='jid' and text()='alice@localhost']]");
  const account = await browser.findElement(aliceRow);
  if (!/active/.test(await account.getAttribute("class"))) await account.click();
  // alice's phone: a second Tether store for the same account, on the server the window uses.
  const phone = { db: path.join(WORK, "phone.db") };
  const added = spawnSync(path.join(BIN, "tether"), ["--db", phone.db, "account", "add", "--jid", "alice@localhost",
    "--password-env", "PW", "--server", proxyAddr, "--ca-file", serverInfo.ca_file],
    { env: { ...process.env, PW: "alice" }, encoding: "utf8" });
  assert.equal(added.status, 0, added.stderr);
  const phoneRooms = () =>
    tether(phone.db, "room", "list").split("\n").filter(Boolean).map((l) => JSON.parse(l).jid);
  const room = "across@conference.localhost";
  tether(phone.db, "room", "join", room, "--nick", "alice-phone");
  phone.run = start(path.join(BIN, "tether"), ["--db", phone.db, "run"]);
  phone.events = [];
  createInterface({ input: phone.run.stdout }).on("line", (l) => {
    try {
      phone.events.push(JSON.parse(l));
    } catch {
      // not an event line
    }
  });
  try {
    // The phone joins and publishes the bookmark; the window hears it and shows the room without
    // being asked, joined by its own session.
    const t0 = Date.now();
    const roomRow = By.xpath(`//ul[contains(@class,'people')]/li[contains(., '${room}')]`);
    await browser.wait(until.elementLocated(roomRow), LONG, `the phone's room in the window (logs in ${WORK})`);
    const arrived = Date.now() - t0;
    await browser.wait(
      until.elementLocated(By.xpath(`//ul[contains(@class,'people')]/li[contains(., '${room}')]/span[contains(@class,'dot') and contains(@class,'on')]`)),
      LONG,
      `the window's session joined the phone's room (logs in ${WORK})`,
    );
    const joined = Date.now() - t0;
    assert.ok(phoneRooms().includes(room), "the phone has the room");
    await shot("34-bookmark-arrived");

    // Left from the window, after the confirmation: gone here, and the phone hears the retraction.
    await (await browser.findElement(roomRow)).click();
    await (await browser.wait(until.elementLocated(By.css("[data-testid=leave-room]")), LONG)).click();
    const dialog = await browser.wait(until.elementLocated(By.css("[data-testid=leave-dialog]")), LONG);
    assert.match(await dialog.getText(), new RegExp(`Leave ${room.replace(/\./g, "\\.")}\\?`));
    const t1 = Date.now();
    await dialog.findElement(By.xpath(".//button[text()='Leave']")).click();
    await browser.wait(
      async () =>
        (await browser.findElements(roomRow)).length === 0 &&
        (await browser.findElements(By.css("[data-testid=leave-dialog]"))).length === 0,
      LONG,
      "the room gone from the window's list",
    );
    const aliceRooms = tether(path.join(WORK, "alice.db"), "--account", "alice@localhost", "room", "list");
    assert.ok(!aliceRooms.includes(`"${room}"`), `the window's store still has the room: ${aliceRooms}`);
    await eventually(() => !phoneRooms().includes(room), `the phone leaving the room (logs in ${WORK})`);
    const left = Date.now() - t1;
    assert.ok(
      phone.events.some((e) => e.event === "room:bookmark" && e.room === room && e.joined === false),
      "the phone was told by the bookmark's retraction",
    );
    console.log(`bookmarks: the phone's room shown in ${arrived} ms, joined in ${joined} ms; left on the phone ${left} ms after the Leave`);
    await shot("35-room-left-everywhere");
  } finally {
    phone.run.kill("SIGTERM");
  }
});
