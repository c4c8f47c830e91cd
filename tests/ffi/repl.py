#!/usr/bin/env python3
"""A line-driven app over Tether's generated Python bindings (tests/ffi: see README there).

Reads commands on stdin, one per line, tab-separated: SEQ, COMMAND, ARGS... It calls the
generated `tether_ffi` module and prints JSON lines on stdout: every listener event (in the CLI's
JSON shape, plus the OS name of the thread that delivered it) and one reply per command:
{"event": "reply", "seq": N, "ok": true, ...} or {"event": "reply", "seq": N, "ok": false,
"error": {"kind": "Usage", "message": "..."}}.

The Kotlin twin (Repl.kt) speaks exactly the same protocol, so one Rust driver
(tests/tests/ffi.rs) runs every scenario against both.
"""

import json
import sys
import threading
import time

import tether_ffi as t

OUT = threading.Lock()


def emit(obj):
    line = json.dumps(obj)
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def thread_name():
    with open("/proc/thread-self/comm") as f:
        return f.read().strip()


def error_json(e):
    return {"kind": type(e).__name__, "message": e.reason}


def event_json(e):
    """The CLI's JSON shape for a typed event (every variant is matched)."""
    if e.is_message_state():
        out = {"event": e.name, "id": e.id, "peer": e.peer, "state": e.state.name.lower()}
        if e.error is not None:
            out["error"] = e.error
        return out
    if e.is_message_received():
        out = {
            "event": "message:received",
            "id": e.id,
            "from": e._from,
            "body": e.body,
            "direction": "in" if e.direction == t.Direction.INCOMING else "out",
        }
        if e.room is not None:
            out["room"], out["nick"] = e.room, e.nick
        return out
    if e.is_connection():
        out = {"event": "connection", "state": e.state.name.lower()}
        for k in ("resumed", "reason", "retry_in_ms"):
            if getattr(e, k) is not None:
                out[k] = getattr(e, k)
        return out
    if e.is_error():
        return {"event": "error", "kind": e.kind, "message": e.message}
    if e.is_presence():
        return {"event": "presence", "from": e._from, "available": e.available}
    if e.is_subscription_request():
        return {"event": "subscription:request", "from": e._from}
    if e.is_roster():
        return {"event": "roster", "jid": e.jid, "subscription": e.subscription}
    if e.is_room_joined():
        return {"event": "room:joined", "room": e.room, "nick": e.nick}
    if e.is_mam_synced():
        return {"event": "mam:synced", "archive": e.archive, "count": e.count}
    if e.is_csi():
        return {"event": "csi", "state": "inactive" if e.inactive else "active"}
    if e.is_events_missed():
        return {"event": "events:missed", "count": e.count}
    if e.is_message_updated():
        return {"event": "message:updated", "id": e.id, "peer": e.peer, "action": e.action.name.lower()}
    if e.is_chat_state_changed():
        return {"event": "chat:state", "from": e._from, "state": e.state.name.lower()}
    if e.is_transfer():
        return {"event": e.name, "id": e.id, "done": e.done, "total": e.total, "error": e.error}
    if e.is_room_bookmark():
        return {"event": "room:bookmark", "room": e.room, "joined": e.joined}
    if e.is_profile_changed():
        return {"event": "profile", "jid": e.jid}
    if e.is_room_rejoining():
        return {"event": "room:rejoining", "room": e.room, "reason": e.reason}
    if e.is_blocking():
        return {"event": "blocking", "jid": e.jid, "state": e.state, "error": e.error}
    if e.is_push():
        return {"event": "push", "state": e.state, "service": e.service, "node": e.node, "error": e.error}
    if e.is_stopped():
        return {"event": "stopped", "error": None if e.error is None else error_json(e.error)}
    raise AssertionError(f"unknown event {e!r}")


class Listener(t.EventListener):
    """mode: normal, or "slow" (sleeps 1 ms per event) and/or "reentrant" (calls the client back)."""

    def __init__(self, mode):
        self.mode = mode
        self.client = None

    def on_event(self, event):
        out = event_json(event)
        out["thread"] = thread_name()
        if "slow" in self.mode:
            time.sleep(0.001)
        if "reentrant" in self.mode and self.client is not None:
            out["pending"] = self.client.pending_count()
        emit(out)


def message_json(m):
    return {
        "id": m.id,
        "peer": m.peer,
        "body": m.body,
        "state": m.state.name.lower(),
        "direction": "in" if m.direction == t.Direction.INCOMING else "out",
        "error": m.error,
        "attempts": m.attempts,
        "file": None if m.file is None else {"transfer": m.file.transfer, "sha256": m.file.sha256},
    }


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def main():
    db = sys.argv[1]
    client = None
    for line in sys.stdin:
        parts = line.rstrip("\n").split("\t")
        seq, cmd, args = int(parts[0]), parts[1], parts[2:]
        reply = {"event": "reply", "seq": seq, "cmd": cmd, "ok": True}
        try:
            if cmd == "add_account":
                jid, password, server, ca = args
                info = t.add_account(
                    db,
                    t.AccountSettings(
                        jid=jid,
                        password=password,
                        server=server,
                        ca_file=ca or None,
                        insecure_plaintext_for_tests=False,
                    ),
                )
                reply["jid"] = info.jid
            elif cmd == "open":
                # An optional fourth argument names the account of a store that holds several.
                reconnect_min_ms, event_buffer, mode = args[:3]
                options = t.ClientOptions(
                    reconnect_min_ms=int(reconnect_min_ms),
                    reconnect_max_ms=1000,
                    event_buffer=int(event_buffer),
                )
                if len(args) > 3:
                    client = t.TetherClient.open_account(db, args[3], options)
                else:
                    client = t.TetherClient.open(db, options)
                listener = Listener(mode)
                listener.client = client
                client.set_listener(listener)
                reply["jid"] = client.account().jid
            elif cmd == "set_password":
                client.set_password(args[0])
            elif cmd == "connect":
                client.connect()
            elif cmd == "send":
                reply["id"] = client.send(args[0], args[1])
            elif cmd == "send_file":
                reply["id"] = client.send_file(args[0], args[1])
            elif cmd == "send_many":
                to, n, prefix = args
                ids = client.send_many(
                    [t.OutgoingMessage(to=to, body=f"{prefix} {i}") for i in range(int(n))]
                )
                reply["count"] = len(ids)
            elif cmd == "resend_failed":
                ids = [m.id for m in client.failed_messages()]
                client.resend(ids)
                reply["ids"] = ids
            elif cmd == "discard_failed":
                ids = [m.id for m in client.failed_messages()]
                client.discard(ids)
                reply["ids"] = ids
            elif cmd == "suspend":
                reply["told"] = client.suspend()
            elif cmd == "resume":
                client.resume()
            elif cmd == "network_changed":
                client.network_changed()
            elif cmd == "enable_push":
                service, node, secret = args
                client.enable_push(service, node, secret or None)
            elif cmd == "wake":
                s = client.wake(int(args[0]), args[1] == "1")
                reply["outcome"] = s.outcome.name.lower()
                reply["new_messages"] = s.new_messages
                reply["elapsed_ms"] = s.elapsed_ms
                reply["error"] = s.error
                reply["conversations"] = [
                    {"peer": c.peer, "count": c.count, "senders": c.senders, "bodies": c.bodies}
                    for c in s.conversations
                ]
            elif cmd == "pending":
                reply["count"] = client.pending_count()
            elif cmd == "messages":
                state = getattr(t.DeliveryState, args[0].upper()) if args and args[0] else None
                reply["messages"] = [message_json(m) for m in client.messages(None, state)]
            elif cmd == "conversations":
                reply["conversations"] = [
                    {"peer": c.peer, "unread": c.unread, "failed": c.failed}
                    for c in client.conversations()
                ]
            elif cmd == "accounts":
                reply["accounts"] = [{"jid": a.jid, "enabled": a.enabled} for a in t.accounts(db)]
            elif cmd == "set_account_enabled":
                t.set_account_enabled(db, args[0], args[1] == "true")
            elif cmd == "remove_account":
                t.remove_account(db, args[0])
            elif cmd == "unified":
                reply["conversations"] = [
                    {"account": c.account, "peer": c.conversation.peer, "last_body": c.conversation.last_body}
                    for c in t.unified_conversations(db)
                ]
            elif cmd == "set_nick":
                client.set_nick(args[0] if args else None)
            elif cmd == "set_avatar":
                with open(args[0], "rb") as f:
                    reply["sha1"] = client.set_avatar(f.read())
            elif cmd == "profile_told":
                reply["told"] = client.profile_told()
            elif cmd == "clear_avatar":
                client.clear_avatar()
            elif cmd == "profile":
                p = client.profile(args[0])
                reply["profile"] = None if p is None else {
                    "jid": p.jid, "nick": p.nick, "full_name": p.full_name,
                    "avatar": p.avatar, "avatar_mime": p.avatar_mime,
                }
            elif cmd == "avatar":
                a = client.avatar(args[0])
                reply["avatar"] = None if a is None else {"mime": a.mime, "bytes": len(a.data)}
            elif cmd == "rss":
                reply["kb"] = rss_kb()
            elif cmd == "close":
                client.close()
            elif cmd == "exit":
                emit(reply)
                return
            else:
                raise ValueError(f"unknown command {cmd}")
        except t.TetherError as e:
            reply["ok"] = False
            reply["error"] = error_json(e)
        emit(reply)


if __name__ == "__main__":
    main()
