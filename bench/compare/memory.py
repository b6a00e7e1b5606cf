#!/usr/bin/env python3
"""autobot's memory, as an operator sees it: the resident memory of an idle master and
an idle slave, and whether both go back to it after work (stdlib only; run by
memory.sh, or by hand with --autobot BIN --work DIR).

The scenarios are bench.py's, against autobot alone:

* idle: after start and --settle seconds, the VmRSS of the master and of the slave,
  with what it is made of (RssAnon: heap and thread stacks; RssFile: pages of the
  binary and libraries; the number of threads);
* burst: --builds forces (200), 4 builds at once, then --settle seconds; the
  master's and slave's RSS must be back within --tolerance (10 %) of idle;
* log: one build printing --log-bytes (100 MB), then the whole log downloaded, then
  --settle seconds; the same check.

It prints `autobot FIGURE VALUE UNIT` lines (as bench.py), then one
`memory CHECK ok|FAIL ...` line per check and a summary; it exits 1 when a check
fails, or when an idle figure is above its target (--master-target 10 MiB,
--slave-target 5 MiB).
"""
import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench.py, next to this file)


def breakdown(pid):
    """VmRSS, RssAnon, RssFile (MiB) and the number of threads of `pid`."""
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('VmRSS', 'RssAnon', 'RssFile', 'Threads'):
                n = int(v.split()[0])
                out[k] = n if k == 'Threads' else n / 1024.0
    return out


def anon_parts(pid):
    """RssAnon (MiB) of `pid` by what holds it: the allocators' heaps (glibc's main
    `[heap]` and its arenas' 64 MiB-aligned mappings, and every other anonymous
    mapping of 1 MiB or more: jemalloc's extents and metadata), thread stacks (a
    mapping right above a guard page) and the rest of the anonymous mappings (the
    binary's relocated data, written pages of its file mappings, is in RssAnon but
    in none of the three)."""
    parts = {'heap': 0, 'stacks': 0, 'other': 0}
    prev_guard_end = None
    cur = None
    with open('/proc/%d/smaps' % pid) as f:
        for line in f:
            head = line.split()
            if '-' in head[0] and len(head) >= 5 and ':' not in head[0]:
                a, b = (int(x, 16) for x in head[0].split('-'))
                perms, path = head[1], (head[5] if len(head) > 5 else '')
                if not path and prev_guard_end == a:
                    cur = 'stacks'
                elif path == '[heap]' or (not path and (a % (64 << 20) == 0
                                                         or b - a >= (1 << 20))):
                    cur = 'heap'
                elif not path or path.startswith('['):
                    cur = 'other'
                else:
                    cur = None
                prev_guard_end = b if perms == '---p' else None
            elif head[0] == 'Anonymous:' and cur:
                parts[cur] += int(head[1]) / 1024.0
    return parts


def report(s, tag):
    figs = {}
    for who, pid in (('master', s.mpid), ('slave', s.wpid)):
        b = breakdown(pid)
        for part, mib in anon_parts(pid).items():
            bench.emit('autobot', '%s_%s_anon_%s' % (tag, who, part), mib, 'MiB')
        figs[who] = b['VmRSS']
        bench.emit('autobot', '%s_%s_rss' % (tag, who), b['VmRSS'], 'MiB')
        bench.emit('autobot', '%s_%s_rss_anon' % (tag, who), b['RssAnon'], 'MiB')
        bench.emit('autobot', '%s_%s_rss_file' % (tag, who), b['RssFile'], 'MiB')
        bench.emit('autobot', '%s_%s_threads' % (tag, who), b['Threads'], 'threads')
    return figs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--autobot', required=True, help='the autobot binary to measure')
    ap.add_argument('--work', required=True, help='scratch directory (wiped)')
    ap.add_argument('--builds', type=int, default=200)
    ap.add_argument('--log-bytes', type=int, default=100_000_000)
    ap.add_argument('--settle', type=float, default=5)
    ap.add_argument('--tolerance', type=float, default=0.10,
                    help='after work, RSS may be this fraction above idle')
    ap.add_argument('--master-target', type=float, default=10.0, help='idle master, MiB')
    ap.add_argument('--slave-target', type=float, default=5.0, help='idle slave, MiB')
    ap.add_argument('--quiet-wait', type=float, default=60,
                    help='max seconds to wait for other CPU load to go away first')
    args = ap.parse_args()
    args.venv = ''  # bench.Autobot reads it for the buildbot-worker fleet only
    work = os.path.abspath(args.work)
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    bench.log('machine:', bench.machine())
    bench.wait_quiet(args.quiet_wait)
    s = bench.Autobot(work, args)
    checks = []

    def check(what, value, limit):
        ok = value <= limit
        checks.append(ok)
        print('memory CHECK %s %s: %.2f MiB (limit %.2f MiB)'
              % ('ok' if ok else 'FAIL', what, value, limit), flush=True)

    try:
        s.create()
        bench.sc_startup(s)
        time.sleep(args.settle)
        idle = report(s, 'idle')
        check('idle master', idle['master'], args.master_target)
        check('idle slave', idle['slave'], args.slave_target)
        bench.warmup(s)
        s.set_max_builds(4)
        bench.sc_throughput(s, 'burst', args.builds)
        time.sleep(args.settle)
        after = report(s, 'after_burst')
        for who in ('master', 'slave'):
            check('%s after %d builds' % (who, args.builds), after[who],
                  idle[who] * (1 + args.tolerance))
        if args.log_bytes > 0:
            bench.sc_log(s)
            after = report(s, 'after_log')
            for who in ('master', 'slave'):
                check('%s after a %d MB log' % (who, args.log_bytes // 1_000_000),
                      after[who], idle[who] * (1 + args.tolerance))
    finally:
        s.stop()
    failed = checks.count(False)
    print('memory: %d of %d checks passed' % (len(checks) - failed, len(checks)), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
