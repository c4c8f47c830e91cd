#!/usr/bin/env python3
"""A third-party peer for tether-e2e (tests/src/slix_peer.rs): a slixmpp client with its own
service discovery (XEP-0030), entity capabilities (XEP-0115, which verifies every hash it is
given) and chat states (XEP-0085).

It accepts every subscription request (and asks back), prints what it hears as JSON lines
({"event": "presence" | "chat_state" | "message", ...}), and answers commands read from stdin,
one JSON object per line, with {"reply": CMD, ...}:

  {"cmd": "subscribe", "jid": J}          ask J for its presence
  {"cmd": "disco_info", "jid": J, "node": N}   query J itself (not the cache)
  {"cmd": "caps", "jid": J}               what slixmpp verified of J's hash: features, or null
  {"cmd": "disco_flood", "jid": J, "n": N, "timeout": T}
                                          N queries at once: how many were answered
  {"cmd": "send", "to": J, "body": B}     a chat message
  {"cmd": "block", "jids": [J]}           XEP-0191 on this account (unblock the same)
  {"cmd": "blocklist"}                    the account's blocklist as the server has it: jids
  {"cmd": "forge_block_push", "to": J, "jids": [J]}
                                          a blocklist push to someone else's client, as
                                          only their own server may send: its answer's condition
  {"cmd": "publish_avatar", "data": B64, "type": T}
                                          XEP-0084 (needs xep_0084): data, then metadata; its id
  {"cmd": "publish_nick", "nick": N}      XEP-0172 (needs xep_0172)
  {"cmd": "vcard_avatar", "data": B64, "type": T, "fn": F, "nickname": N}
                                          XEP-0054 vCard with a photo, announced in presence
                                          by XEP-0153 (needs xep_0054, xep_0153)
  {"cmd": "legacy_bookmarks"}            XEP-0048 bookmarks in private storage (needs xep_0048):
                                          conferences [{jid, autojoin, nick, name}], by jid
  {"cmd": "set_legacy_bookmarks", "conferences": [{jid, autojoin, nick, name}]}
                                          writes them (the whole storage)
  {"cmd": "avatar_data", "jid": J, "id": I}
                                          J's XEP-0084 data item I: its bytes (base64) and SHA-1

With xep_0084 / xep_0172 it also prints {"event": "avatar", "from", "ids"} and {"event": "nick",
"from", "nick"} for the PEP notifications it gets.

First prints {"ready": true, "jid": FULL} once the session started. Runs until stdin closes.

usage: slix_peer.py HOST PORT JID PASSWORD CA_FILE
"""

import asyncio
import base64
import hashlib
import json
import sys

import slixmpp
from slixmpp.plugins.xep_0191.stanza import BlockItem

CHATSTATES = "http://jabber.org/protocol/chatstates"


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file, extra_plugins):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.roster.auto_authorize = True
        self.roster.auto_subscribe = True
        for plugin in ("xep_0030", "xep_0115", "xep_0085", "xep_0199", "xep_0191", *extra_plugins):
            self.register_plugin(plugin)
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("presence", self.on_presence)
        self.add_event_handler("chatstate", self.on_chat_state)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("groupchat_direct_invite", self.on_invite)
        self.add_event_handler("avatar_metadata_publish", self.on_avatar)
        self.add_event_handler("user_nick_publish", self.on_nick)

    async def started(self, _):
        # Computes our own hash (slixmpp does not by itself), so the presence carries it.
        await self.plugin["xep_0115"].update_caps(jid=self.boundjid, broadcast=False)
        self.send_presence()
        await self.get_roster()
        out({"ready": True, "jid": str(self.boundjid)})

    def on_presence(self, p):
        out({"event": "presence", "from": str(p["from"]), "type": p["type"]})

    def on_chat_state(self, m):
        out({"event": "chat_state", "from": str(m["from"]), "state": m["chat_state"]})

    def on_message(self, m):
        if m["body"]:
            out({"event": "message", "from": str(m["from"]), "id": m["id"], "body": m["body"]})

    def on_invite(self, m):
        x = m["groupchat_invite"]
        out({"event": "invite", "from": str(m["from"]), "id": m["id"], "room": str(x["jid"]),
             "reason": x["reason"]})

    def on_avatar(self, m):
        infos = m["pubsub_event"]["items"]["item"]["avatar_metadata"]["items"]
        out({"event": "avatar", "from": str(m["from"]), "ids": [i["id"] for i in infos]})

    def on_nick(self, m):
        out({"event": "nick", "from": str(m["from"]),
             "nick": m["pubsub_event"]["items"]["item"]["nick"]["nick"]})

    async def command(self, c):
        cmd = c.get("cmd")
        reply = {"reply": cmd}
        try:
            if cmd == "subscribe":
                self.send_presence(pto=c["jid"], ptype="subscribe")
            elif cmd == "disco_info":
                iq = await self.plugin["xep_0030"].get_info(
                    jid=c["jid"], node=c.get("node"), local=False, cached=False, timeout=20
                )
                info = iq["disco_info"]
                reply["features"] = sorted(info["features"])
                reply["identities"] = [list(i) for i in info["identities"]]
            elif cmd == "caps":
                info = await self.plugin["xep_0115"].get_caps(jid=c["jid"])
                reply["features"] = None if info is None else sorted(info["features"])
            elif cmd == "disco_flood":
                async def one():
                    try:
                        await self.plugin["xep_0030"].get_info(
                            jid=c["jid"], local=False, cached=False, timeout=c["timeout"]
                        )
                        return "answered"
                    except slixmpp.exceptions.IqTimeout:
                        return "unanswered"
                    except slixmpp.exceptions.IqError:
                        return "error"
                results = await asyncio.gather(*(one() for _ in range(c["n"])))
                for r in ("answered", "unanswered", "error"):
                    reply[r] = results.count(r)
            elif cmd == "block":
                await self.plugin["xep_0191"].block(c["jids"], timeout=20)
            elif cmd == "unblock":
                # Always with items: none would unblock everyone.
                assert c["jids"], "unblock names its JIDs"
                await self.plugin["xep_0191"].unblock(c["jids"], timeout=20)
            elif cmd == "blocklist":
                jids = await self.plugin["xep_0191"].get_blocked_jids(timeout=20)
                reply["jids"] = sorted(str(j) for j in jids)
            elif cmd == "forge_block_push":
                iq = self.make_iq_set(ito=c["to"])
                for jid in c["jids"]:
                    BlockItem(parent=iq["block"])["jid"] = jid
                try:
                    await iq.send(timeout=20)
                    reply["answer"] = "result"
                except slixmpp.exceptions.IqError as e:
                    reply["answer"] = e.iq["error"]["condition"]
            elif cmd == "invite":
                self.plugin["xep_0249"].send_invitation(c["to"], c["room"], reason=c.get("reason"))
            elif cmd == "join":
                await self.plugin["xep_0045"].join_muc_wait(c["room"], c["nick"], timeout=20)
            elif cmd == "leave":
                self.plugin["xep_0045"].leave_muc(c["room"], c["nick"])
            elif cmd == "publish_avatar":
                data = base64.b64decode(c["data"])
                avatar = self.plugin["xep_0084"]
                await avatar.publish_avatar(data, timeout=20)
                reply["id"] = avatar.generate_id(data)
                await avatar.publish_avatar_metadata(
                    [{"id": reply["id"], "type": c["type"], "bytes": len(data)}], timeout=20)
            elif cmd == "publish_nick":
                await self.plugin["xep_0172"].publish_nick(c["nick"], timeout=20)
            elif cmd == "vcard_avatar":
                vcard = self.plugin["xep_0054"].make_vcard()
                vcard["FN"] = c["fn"]
                vcard["NICKNAME"] = c["nickname"]
                await self.plugin["xep_0054"].publish_vcard(vcard, timeout=20)
                data = base64.b64decode(c["data"])
                await self.plugin["xep_0153"].set_avatar(avatar=data, mtype=c["type"], timeout=20)
                reply["id"] = hashlib.sha1(data).hexdigest()
            elif cmd == "legacy_bookmarks":
                iq = await self.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=20)
                reply["conferences"] = sorted(
                    ({"jid": str(c["jid"]), "autojoin": bool(c["autojoin"]),
                      "nick": c["nick"] or None, "name": c["name"] or None}
                     for c in iq["private"]["bookmarks"]["conferences"]),
                    key=lambda c: c["jid"])
            elif cmd == "set_legacy_bookmarks":
                from slixmpp.plugins.xep_0048.stanza import Bookmarks
                b = Bookmarks()
                for conf in c["conferences"]:
                    b.add_conference(conf["jid"], conf.get("nick"), name=conf.get("name"),
                                     autojoin=conf.get("autojoin"))
                await self.plugin["xep_0048"].set_bookmarks(b, method="xep_0049", timeout=20)
            elif cmd == "avatar_data":
                iq = await self.plugin["xep_0084"].retrieve_avatar(c["jid"], c["id"], timeout=20)
                data = iq["pubsub"]["items"]["item"]["avatar_data"]["value"]
                reply["data"] = base64.b64encode(data).decode()
                reply["sha1"] = hashlib.sha1(data).hexdigest()
            elif cmd == "send":
                self.send_message(mto=c["to"], mbody=c["body"], mtype="chat")
            else:
                reply["error"] = "unknown command"
        except Exception as e:  # the test reads the reason
            reply["error"] = "%s: %s" % (type(e).__name__, e)
        out(reply)


async def main():
    host, port, jid, password, ca_file = sys.argv[1:6]
    extra = [p for p in (sys.argv[6] if len(sys.argv) > 6 else "").split(",") if p]
    peer = Peer(jid, password, ca_file, extra)
    peer.connect(host, int(port))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.strip():
            await peer.command(json.loads(line))
    peer.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
