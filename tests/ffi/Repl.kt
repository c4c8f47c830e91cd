// A line-driven app over Tether's generated Kotlin bindings: the Kotlin twin of repl.py, speaking
// the same protocol (tab-separated commands on stdin: SEQ, COMMAND, ARGS...; JSON lines on stdout:
// every listener event in the CLI's JSON shape plus the OS name of the delivering thread, and one
// reply per command). tests/tests/ffi.rs drives both. Built by tests/ffi/build-kotlin.sh.

import java.io.File
import uniffi.tether_ffi.*

private val out = Any()

private fun emit(json: String) = synchronized(out) {
    print(json)
    print('\n')
    System.out.flush()
}

/** A JSON string literal. */
private fun q(s: String?): String {
    if (s == null) return "null"
    val b = StringBuilder("\"")
    for (c in s) {
        when {
            c == '"' -> b.append("\\\"")
            c == '\\' -> b.append("\\\\")
            c == '\n' -> b.append("\\n")
            c == '\r' -> b.append("\\r")
            c == '\t' -> b.append("\\t")
            c < ' ' -> b.append(String.format("\\u%04x", c.code))
            else -> b.append(c)
        }
    }
    return b.append('"').toString()
}

/** A JSON object from (key, already-encoded value) pairs, leaving out nulls as the CLI does. */
private fun obj(vararg fields: Pair<String, String?>): String =
    fields.filter { it.second != null }.joinToString(",", "{", "}") { "${q(it.first)}:${it.second}" }

private fun threadName(): String = File("/proc/thread-self/comm").readText().trim()

private fun errorJson(e: TetherException): String =
    obj("kind" to q(e::class.simpleName), "message" to q(e.message))

private fun dir(d: Direction) = if (d == Direction.INCOMING) "in" else "out"

/** The CLI's JSON shape for a typed event; `when` is exhaustive over the sealed class. */
private fun eventFields(e: TetherEvent): List<Pair<String, String?>> = when (e) {
    is TetherEvent.MessageState -> listOf(
        "event" to q(e.name), "id" to q(e.id), "peer" to q(e.peer),
        "state" to q(e.state.name.lowercase()), "error" to e.error?.let(::q),
    )
    is TetherEvent.MessageReceived -> listOf(
        "event" to q("message:received"), "id" to q(e.id), "from" to q(e.from),
        "body" to q(e.body), "direction" to q(dir(e.direction)),
        "room" to e.room?.let(::q), "nick" to e.nick?.let(::q),
    )
    is TetherEvent.Connection -> listOf(
        "event" to q("connection"), "state" to q(e.state.name.lowercase()),
        "resumed" to e.resumed?.toString(), "reason" to e.reason?.let(::q),
        "retry_in_ms" to e.retryInMs?.toString(),
    )
    is TetherEvent.Error -> listOf("event" to q("error"), "kind" to q(e.kind), "message" to q(e.message))
    is TetherEvent.Presence -> listOf(
        "event" to q("presence"), "from" to q(e.from), "available" to e.available.toString(),
    )
    is TetherEvent.SubscriptionRequest -> listOf("event" to q("subscription:request"), "from" to q(e.from))
    is TetherEvent.Roster -> listOf("event" to q("roster"), "jid" to q(e.jid), "subscription" to q(e.subscription))
    is TetherEvent.RoomJoined -> listOf("event" to q("room:joined"), "room" to q(e.room), "nick" to q(e.nick))
    is TetherEvent.MamSynced -> listOf(
        "event" to q("mam:synced"), "archive" to q(e.archive), "count" to e.count.toString(),
    )
    is TetherEvent.Csi -> listOf("event" to q("csi"), "state" to q(if (e.inactive) "inactive" else "active"))
    is TetherEvent.EventsMissed -> listOf("event" to q("events:missed"), "count" to e.count.toString())
    is TetherEvent.Stopped -> listOf("event" to q("stopped"), "error" to (e.error?.let(::errorJson) ?: "null"))
    is TetherEvent.MessageUpdated -> listOf(
        "event" to q("message:updated"), "id" to q(e.id), "peer" to q(e.peer),
        "action" to q(e.action.name.lowercase()),
    )
    is TetherEvent.ChatStateChanged -> listOf(
        "event" to q("chat:state"), "from" to q(e.from), "state" to q(e.state.name.lowercase()),
    )
    is TetherEvent.Push -> listOf(
        "event" to q("push"), "state" to q(e.state), "service" to q(e.service), "node" to q(e.node),
        "error" to e.error?.let(::q),
    )
    is TetherEvent.RoomBookmark -> listOf("event" to q("room:bookmark"), "room" to q(e.room), "joined" to e.joined.toString())
    is TetherEvent.ProfileChanged -> listOf("event" to q("profile"), "jid" to q(e.jid))
    is TetherEvent.RoomRejoining -> listOf("event" to q("room:rejoining"), "room" to q(e.room), "reason" to q(e.reason))
    is TetherEvent.Blocking -> listOf(
        "event" to q("blocking"), "jid" to q(e.jid), "state" to q(e.state), "error" to e.error?.let(::q),
    )
    is TetherEvent.Transfer -> listOf(
        "event" to q(e.name), "id" to e.id?.let(::q), "done" to e.done.toString(),
        "total" to e.total?.toString(), "error" to e.error?.let(::q),
    )
}

/** mode: "normal", or "slow" (1 ms per event) and/or "reentrant" (calls the client back). */
private class Listener(val mode: String) : EventListener {
    @Volatile var client: TetherClient? = null

    override fun onEvent(event: TetherEvent) {
        val fields = eventFields(event).toMutableList()
        fields.add("thread" to q(threadName()))
        if ("slow" in mode) Thread.sleep(1)
        val c = client
        if ("reentrant" in mode && c != null) fields.add("pending" to c.pendingCount().toString())
        emit(obj(*fields.toTypedArray()))
    }
}

private fun messageJson(m: Message): String = obj(
    "id" to q(m.id), "peer" to q(m.peer), "body" to q(m.body),
    "state" to q(m.state.name.lowercase()), "direction" to q(dir(m.direction)),
    "error" to (m.error?.let(::q) ?: "null"), "attempts" to m.attempts.toString(),
    "file" to (m.file?.let { obj("transfer" to q(it.transfer), "sha256" to (it.sha256?.let(::q) ?: "null")) } ?: "null"),
)

private fun rssKb(): Long = File("/proc/self/status").readLines()
    .first { it.startsWith("VmRSS:") }.split(Regex("\\s+"))[1].toLong()

fun main(argv: Array<String>) {
    val db = argv[0]
    var client: TetherClient? = null
    while (true) {
        val line = readLine() ?: return
        val parts = line.split('\t')
        val seq = parts[0].toLong()
        val cmd = parts[1]
        val args = parts.drop(2)
        val reply = mutableListOf<Pair<String, String?>>(
            "event" to q("reply"), "seq" to seq.toString(), "cmd" to q(cmd),
        )
        try {
            when (cmd) {
                "add_account" -> {
                    val info = addAccount(
                        db,
                        AccountSettings(
                            jid = args[0], password = args[1], server = args[2],
                            caFile = args[3].ifEmpty { null }, insecurePlaintextForTests = false,
                        ),
                    )
                    reply.add("jid" to q(info.jid))
                }
                "open" -> {
                    // An optional fourth argument names the account of a store that holds several.
                    val options = ClientOptions(
                        reconnectMinMs = args[0].toULong(),
                        reconnectMaxMs = 1000uL,
                        eventBuffer = args[1].toUInt(),
                    )
                    val c = if (args.size > 3) TetherClient.openAccount(db, args[3], options)
                    else TetherClient.open(db, options)
                    val listener = Listener(args[2])
                    listener.client = c
                    c.setListener(listener)
                    client = c
                    reply.add("jid" to q(c.account().jid))
                }
                "set_password" -> client!!.setPassword(args[0])
                "connect" -> client!!.connect()
                "send" -> reply.add("id" to q(client!!.send(args[0], args[1])))
                "send_file" -> reply.add("id" to q(client!!.sendFile(args[0], args[1])))
                "send_many" -> {
                    val n = args[1].toInt()
                    val ids = client!!.sendMany((0 until n).map { OutgoingMessage(args[0], "${args[2]} $it") })
                    reply.add("count" to ids.size.toString())
                }
                "resend_failed" -> {
                    val ids = client!!.failedMessages().map { it.id }
                    client.resend(ids)
                    reply.add("ids" to ids.joinToString(",", "[", "]") { q(it) })
                }
                "discard_failed" -> {
                    val ids = client!!.failedMessages().map { it.id }
                    client.discard(ids)
                    reply.add("ids" to ids.joinToString(",", "[", "]") { q(it) })
                }
                "suspend" -> reply.add("told" to client!!.suspend().toString())
                "resume" -> client!!.resume()
                "network_changed" -> client!!.networkChanged()
                "enable_push" -> client!!.enablePush(args[0], args[1], args[2].ifEmpty { null })
                "wake" -> {
                    val s = client!!.wake(args[0].toULong(), args[1] == "1")
                    reply.add("outcome" to q(s.outcome.name.lowercase()))
                    reply.add("new_messages" to s.newMessages.toString())
                    reply.add("elapsed_ms" to s.elapsedMs.toString())
                    reply.add("error" to (s.error?.let(::q) ?: "null"))
                    reply.add("conversations" to s.conversations.joinToString(",", "[", "]") { c ->
                        val list = { xs: List<String> -> xs.joinToString(",", "[", "]") { q(it) } }
                        "{\"peer\":${q(c.peer)},\"count\":${c.count},\"senders\":${list(c.senders)},\"bodies\":${list(c.bodies)}}"
                    })
                }
                "pending" -> reply.add("count" to client!!.pendingCount().toString())
                "messages" -> {
                    val state = args.firstOrNull()?.ifEmpty { null }?.let { DeliveryState.valueOf(it.uppercase()) }
                    val list = client!!.messages(null, state)
                    reply.add("messages" to list.joinToString(",", "[", "]") { messageJson(it) })
                }
                "conversations" -> reply.add(
                    "conversations" to client!!.conversations().joinToString(",", "[", "]") {
                        obj("peer" to q(it.peer), "unread" to it.unread.toString(), "failed" to it.failed.toString())
                    },
                )
                "accounts" -> reply.add(
                    "accounts" to accounts(db).joinToString(",", "[", "]") {
                        obj("jid" to q(it.jid), "enabled" to it.enabled.toString())
                    },
                )
                "set_account_enabled" -> setAccountEnabled(db, args[0], args[1] == "true")
                "remove_account" -> removeAccount(db, args[0])
                "unified" -> reply.add(
                    "conversations" to unifiedConversations(db).joinToString(",", "[", "]") {
                        obj(
                            "account" to q(it.account), "peer" to q(it.conversation.peer),
                            "last_body" to q(it.conversation.lastBody),
                        )
                    },
                )
                "set_nick" -> client!!.setNick(args.firstOrNull())
                "set_avatar" -> reply.add("sha1" to q(client!!.setAvatar(File(args[0]).readBytes())))
                "clear_avatar" -> client!!.clearAvatar()
                "profile_told" -> reply.add("told" to client!!.profileTold().toString())
                "profile" -> reply.add(
                    "profile" to (
                        client!!.profile(args[0])?.let {
                            obj(
                                "jid" to q(it.jid), "nick" to q(it.nick), "full_name" to q(it.fullName),
                                "avatar" to q(it.avatar), "avatar_mime" to q(it.avatarMime),
                            )
                        } ?: "null"
                        ),
                )
                "avatar" -> reply.add(
                    "avatar" to (
                        client!!.avatar(args[0])?.let { obj("mime" to q(it.mime), "bytes" to it.data.size.toString()) }
                            ?: "null"
                        ),
                )
                "rss" -> reply.add("kb" to rssKb().toString())
                "close" -> client!!.shutdown()
                "exit" -> {
                    reply.add("ok" to "true")
                    emit(obj(*reply.toTypedArray()))
                    return
                }
                else -> throw IllegalArgumentException("unknown command $cmd")
            }
            reply.add("ok" to "true")
        } catch (e: TetherException) {
            reply.add("ok" to "false")
            reply.add("error" to errorJson(e))
        }
        emit(obj(*reply.toTypedArray()))
    }
}
