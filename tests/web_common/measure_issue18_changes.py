#!/usr/bin/env python3
"""Issue 18 item 7 as it was filed, for a figure: three 16 MB Changes stored in a
master's database (with SQL, as rows taken before intake capped them), then 24
concurrent anonymous GET /api/v1/changes on publichtmlport; prints the master's
peak resident memory (VmHWM) before and after, and the size of the answers.
tests/web_bounds.rs is the test; this compares two binaries on the original case.

usage: measure_issue18_changes.py AUTOBOT_TO_MEASURE AUTOBOT_THAT_MAKES_THE_SCHEMA
(e.g. target/debug/autobot twice; an older autobot as the first to see the old peak)"""
import os, sys, socket, sqlite3, subprocess, tempfile, threading, time, urllib.request, json, signal

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def hwm(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM:"): return int(l.split()[1]) // 1024

def start(binary, d, hp):
    p = subprocess.Popen([binary, "run", d], stdout=open(f"{d}/run.log", "a"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{hp}/api/v1/builders", timeout=5).read(); return p
        except Exception: time.sleep(0.1)
    raise SystemExit("master did not start")

def stop(p):
    os.killpg(p.pid, signal.SIGTERM); p.wait(60)

measure, schema = sys.argv[1], sys.argv[2]
d = tempfile.mkdtemp(prefix="bounds-")
sp, hp, pp = free_port(), free_port(), free_port()
ini = f"[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\n\n[slave:s1]\n"
open(f"{d}/master.ini", "w").write(ini + "\n[other]\ntype = shell\nstep.x = true\n")
stop(start(schema, d, hp))
open(f"{d}/master.ini", "w").write(ini + "\n[quick]\ntype = shell\nstep.x = true\n")
db = sqlite3.connect(f"{d}/state.sqlite")
for i in range(3):
    db.execute("INSERT INTO changes(who, files, comments, when_ts) VALUES (?, ?, ?, ?)",
               (f"big{i}", json.dumps([f"f{i}.c"]), ("x" * 63 + "\n") * (16 * 1024 * 1024 // 64), 1000 + i))
db.commit(); db.close()
p = start(measure, d, hp)
urllib.request.urlopen(f"http://127.0.0.1:{pp}/api/v1/changes?limit=1", timeout=60).read()
before = hwm(p.pid)
sizes = []
def get():
    sizes.append(len(urllib.request.urlopen(f"http://127.0.0.1:{pp}/api/v1/changes", timeout=600).read()))
t0 = time.time()
ts = [threading.Thread(target=get) for _ in range(24)]
[t.start() for t in ts]; [t.join() for t in ts]
after = hwm(p.pid)
stop(p)
print(f"{measure}: VmHWM {before} MiB before, {after} MiB after 24 concurrent GET /api/v1/changes "
      f"({len(sizes)} answers of {max(sizes)} bytes, {time.time()-t0:.1f} s)")
