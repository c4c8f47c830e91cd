#!/usr/bin/env python3
"""A test push app server (XEP-0357 "App Server") for tether-e2e (tests/src/push_server.rs).

A slixmpp component (XEP-0114) that answers every publish the user's server sends with a result
and prints it as one JSON line: {"from", "node", "secret", "fields"}. First prints
{"ready": true} once the component is connected. Runs until stdin closes.

usage: app_server.py HOST PORT JID SECRET
"""

import asyncio
import json
import sys

import slixmpp
from slixmpp.componentxmpp import ComponentXMPP

PUBSUB = "http://jabber.org/protocol/pubsub"
PUSH = "urn:xmpp:push:0"
DATA = "jabber:x:data"


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def form_fields(x):
    fields = {}
    if x is None:
        return fields
    for field in x.findall("{%s}field" % DATA):
        value = field.find("{%s}value" % DATA)
        fields[field.get("var")] = "" if value is None else (value.text or "")
    return fields


class AppServer(ComponentXMPP):
    def __init__(self, jid, secret, host, port):
        super().__init__(jid, secret, host, port)
        self.add_event_handler("session_start", self.started)
        self.register_handler(
            slixmpp.xmlstream.handler.Callback(
                "publish",
                slixmpp.xmlstream.matcher.MatchXPath("{jabber:component:accept}iq/{%s}pubsub" % PUBSUB),
                self.on_publish,
            )
        )

    def started(self, _):
        out({"ready": True})

    def on_publish(self, iq):
        pubsub = iq.xml.find("{%s}pubsub" % PUBSUB)
        publish = pubsub.find("{%s}publish" % PUBSUB)
        options = pubsub.find("{%s}publish-options/{%s}x" % (PUBSUB, DATA))
        notification = None
        if publish is not None:
            notification = publish.find("{%s}item/{%s}notification/{%s}x" % (PUBSUB, PUSH, DATA))
        out(
            {
                "from": str(iq["from"]),
                "node": None if publish is None else publish.get("node"),
                "secret": form_fields(options).get("secret"),
                "fields": form_fields(notification),
            }
        )
        iq.reply(clear=True).send()


async def main():
    host, port, jid, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    server = AppServer(jid, secret, host, port)
    server.connect()
    loop = asyncio.get_running_loop()
    # Until the test closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    server.disconnect()


asyncio.run(main())
