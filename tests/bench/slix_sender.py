#!/usr/bin/env python3
"""slixmpp (from PyPI, XEP-0198 on) as the peer client in Tether's benchmark.

Usage: slix_sender.py JID PASSWORD HOST PORT CA_FILE TO N BODY_BYTES

Connects (STARTTLS, certificates checked against CA_FILE, SASL as slixmpp picks it), enables
stream management, prints "ready" and waits for a line on stdin. Then it sends N chat messages of
BODY_BYTES bytes to TO, each shaped as Tether's (id, origin-id, receipt request, markable: the
receiver answers each with a receipt, which slixmpp reads and, unlike Tether, does not store), and prints "done N" once the server has acked all of them (slixmpp's
`stanza_acked` event, one per stanza). Every further stdin line starts another round of N.
The harness times the rounds and reads the process's CPU time and RSS from /proc.
"""

import asyncio
import os
import sys

import slixmpp
from slixmpp.xmlstream import ET

DEBUG = bool(os.environ.get("SLIX_DEBUG"))


class Sender(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file, to, n, body_bytes):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.to = to
        self.n = n
        self.body_bytes = body_bytes
        self.acked = 0
        self.target = 0
        self.sent = 0
        self.register_plugin("xep_0198")
        self.ready = asyncio.Event()
        self.add_event_handler("sm_enabled", lambda _: self.ready.set())
        self.add_event_handler("stanza_acked", self.on_acked)
        self.add_event_handler("failed_auth", lambda _: fail("authentication failed"))

    def on_acked(self, stanza):
        if DEBUG:
            print(f"acked {stanza.name} {self.acked}/{self.target}", file=sys.stderr, flush=True)
        if stanza.name != "message":
            return
        self.acked += 1
        if self.acked == self.target:
            print(f"done {self.acked}", flush=True)

    def round(self):
        self.target += self.n
        for _ in range(self.n):
            prefix = f"{self.sent:010} "
            # The stanza Tether writes (and the raw limit copies): id, origin-id, a receipt request
            # and the markable flag, so the receiver answers each with a receipt, as for Tether.
            msg = self.make_message(mto=self.to, mbody=prefix + "x" * (self.body_bytes - len(prefix)), mtype="chat")
            msg["id"] = f"slix-{self.sent}"
            msg.xml.append(ET.Element("{urn:xmpp:sid:0}origin-id", {"id": msg["id"]}))
            msg.xml.append(ET.Element("{urn:xmpp:receipts}request"))
            msg.xml.append(ET.Element("{urn:xmpp:chat-markers:0}markable"))
            msg.send()
            self.sent += 1

    async def ask_for_the_tail(self):
        """slixmpp asks for an ack every `window` (5) stanzas and has no timer for the rest; a
        request written now would overtake messages still in its send queue. So ask every 100 ms
        until the round is acked (Tether's policy: after 5 stanzas or 100 ms)."""
        while self.acked < self.target:
            await asyncio.sleep(0.1)
            if self.acked < self.target:
                self.plugin["xep_0198"].request_ack()


def fail(why):
    print(f"error {why}", flush=True)
    sys.exit(1)


async def main():
    jid, password, host, port, ca_file, to, n, body_bytes = sys.argv[1:9]
    xmpp = Sender(jid, password, ca_file, to, int(n), int(body_bytes))
    xmpp.connect(host, int(port))
    try:
        await asyncio.wait_for(xmpp.ready.wait(), 30)
    except asyncio.TimeoutError:
        fail("no stream management session within 30 s")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        xmpp.round()
        await xmpp.ask_for_the_tail()
    xmpp.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
