#!/usr/bin/env python3
"""Helpers of bench/startup.sh (standard library only).

  startup_probe.py ready <runs> <url> -- <command> [args...]
      Spawns the command <runs> times; each time polls <url> every 5 ms (a new connection
      per attempt) until the first 200, prints the milliseconds from spawn to that answer,
      then stops the process (SIGTERM, then SIGKILL after 10 s) and waits for it.
  startup_probe.py warm <requests> <connections> <base-url> <header|-> <path> [path...]
      Sends <requests> GETs spread over <connections> keep-alive connections, cycling
      through the paths, with an optional "Name: value" header; fails unless all are 200.
"""

import http.client
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

POLL = 0.005


def first_200(url, started, proc, limit=30.0):
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"error: the process exited with {proc.returncode} before answering")
        if time.monotonic() - started > limit:
            raise SystemExit(f"error: no 200 from {url} within {limit} s")
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=limit)
        try:
            conn.request("GET", path)
            status = conn.getresponse().status
            if status == 200:
                return time.monotonic()
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(POLL)


def ready(runs, url, command):
    times = []
    for _ in range(runs):
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            answered = first_200(url, started, proc)
            times.append((answered - started) * 1000.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        time.sleep(0.2)  # let the port and the database sessions go
    print(" ".join(f"{t:.1f}" for t in times))


def warm(requests, connections, base, header, paths):
    parts = urllib.parse.urlsplit(base)
    headers = {}
    if header != "-":
        name, value = header.split(":", 1)
        headers[name.strip()] = value.strip()
    failures = []
    per_conn = [requests // connections + (1 if i < requests % connections else 0) for i in range(connections)]

    def client(n, offset):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        for i in range(n):
            path = paths[(offset + i) % len(paths)]
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(f"{path}: {response.status}")
        conn.close()

    threads = [threading.Thread(target=client, args=(n, i)) for i, n in enumerate(per_conn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"error: {len(failures)} warm-up requests failed, e.g. {failures[0]}")


def main(argv):
    if len(argv) >= 5 and argv[1] == "ready" and argv[4] == "--":
        ready(int(argv[2]), argv[3], argv[5:])
    elif len(argv) >= 7 and argv[1] == "warm":
        warm(int(argv[2]), int(argv[3]), argv[4], argv[5], argv[6:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
