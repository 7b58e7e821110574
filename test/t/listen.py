#!/usr/bin/env python3
#
# test/t/listen.py: a LISTEN client for the TAP tests, written the way an
# application would write one (psycopg 3, autocommit).
#
#   listen.py CONNINFO [CHANNEL [SECONDS]]
#
# Connects, runs LISTEN CHANNEL (default batpak), prints "ready <backend pid>"
# and then one line per notification received:
#
#   notify <sending pid> <channel> <payload>
#
# (the payload as sent, on one line).  Ends when a line "quit" arrives on
# standard input, standard input closes, SECONDS (default 300) pass, or the
# connection is lost ("lost <message>", exit status 1).  Standard output is
# flushed after every line so that the test sees each notification as it
# arrives.

import os
import select
import sys
import time

import psycopg


def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def main():
    conninfo = sys.argv[1]
    channel = sys.argv[2] if len(sys.argv) > 2 else "batpak"
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 300.0
    deadline = time.monotonic() + seconds

    conn = psycopg.connect(conninfo, autocommit=True)
    conn.execute("LISTEN " + psycopg.sql.Identifier(channel).as_string(conn))
    say("ready", conn.info.backend_pid)

    pgconn = conn.pgconn
    stdin_buf = b""
    while True:
        # notifications libpq has already parsed (e.g. with LISTEN's reply)
        while True:
            n = pgconn.notifies()
            if n is None:
                break
            say("notify", n.be_pid, n.relname.decode(), n.extra.decode())

        left = deadline - time.monotonic()
        if left <= 0:
            say("timeout")
            return 0
        readable, _, _ = select.select([pgconn.socket, 0], [], [], min(left, 1.0))
        if 0 in readable:
            chunk = os.read(0, 4096)
            if not chunk:
                say("eof")
                return 0
            stdin_buf += chunk
            if b"quit" in stdin_buf.split(b"\n"):
                say("quit")
                return 0
        if pgconn.socket in readable:
            try:
                pgconn.consume_input()
            except psycopg.OperationalError as e:
                say("lost", str(e).replace("\n", " "))
                return 1
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                say("lost", pgconn.error_message.decode(errors="replace").replace("\n", " "))
                return 1


if __name__ == "__main__":
    sys.exit(main())
