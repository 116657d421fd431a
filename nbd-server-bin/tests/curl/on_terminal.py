#!/usr/bin/env python3
"""Runs a command on a new pseudo-terminal, answers its password prompt.

    on_terminal.py ANSWER COMMAND ARGS...

Waits for "password" in the command's output, types ANSWER and a
newline, then copies the rest of the output to standard output until the
command ends, and exits with its status.
"""

import os
import pty
import sys

answer = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])

seen = b""
answered = False
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    if not answered:
        seen += data
        if b"password" in seen.lower():
            os.write(fd, answer + b"\n")
            answered = True
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
