#!/usr/bin/env python3
"""The peer benchmark: the same scenarios against Buildbot 4.3 and autobot, one run,
one machine, one driver (stdlib only; called by run.sh).

Both systems are driven by this one program through their HTTP APIs, with the same
client code, the same polling intervals and the same builds, so that a difference in
a figure is a difference between the systems and not between two benches:

* startup: the master's start command until it returns, then the slave's until the
  master's API shows it connected;
* idle memory: RSS (and PSS of the whole process tree) of master and slave, settled;
* latency: one force of a one-step `true` build -> its request complete (10 ms poll),
  median of 20;
* throughput: 200 forces posted one after another on one keep-alive connection,
  round-robin over 4 `true` builders on the one slave, first POST -> last request
  complete, with one and then four concurrent builds per slave (reconfig);
* history: the newest 100 builds of one builder through the API, and GET /;
* fleet: 50 more slaves started at once -> all connected, then one `true` build on
  each (fan-out); for autobot both with 50 autobot slaves and with 50 stock
  buildbot-worker processes;
* log: a step printing 100 MB (`yes <79 chars> | head -c 100000000`): force ->
  complete, CPU and peak RSS meanwhile, storage growth, then the whole log downloaded.

Every figure is printed as `SYSTEM FIGURE VALUE UNIT` while the run goes, and at the
end a table `figure | buildbot | autobot | ratio` (ratio > 1: autobot is better by
that factor). Progress notes go to stderr, prefixed with '#'.
"""
import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
now = time.monotonic
LINE = ('0123456789' * 8)[:79]  # 79 chars + '\n' = 80-byte lines, as master.cfg

# ---------------------------------------------------------------- measuring


def log(*a):
    print('#', *a, file=sys.stderr, flush=True)


RESULTS = {}  # figure -> {system: (value, unit)}
_capture = None


def emit(system, name, value, unit):
    RESULTS.setdefault(name, {})[system] = (value, unit)
    if isinstance(value, float):
        value = ('%.4f' % value) if abs(value) < 10 else ('%.2f' % value)
    line = '%s %s %s %s' % (system, name, value, unit)
    if _capture is not None:
        _capture.append(line)
    else:
        print(line, flush=True)


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_status(pid):
    d = {}
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                k, _, v = line.partition(':')
                if k in ('VmRSS', 'VmHWM'):
                    d[k] = int(v.split()[0]) / 1024.0  # MiB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return d


def rss(pid):
    return proc_status(pid).get('VmRSS', 0.0)


def children_of():
    """ppid -> [pid] for every process on the machine."""
    kids = {}
    for e in os.listdir('/proc'):
        if not e.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % e) as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(e))
    return kids


def tree_pss(pid):
    """PSS of a process and all its descendants, MiB (shared pages counted once)."""
    kids = children_of()
    todo, total = [pid], 0.0
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open('/proc/%d/smaps_rollup' % p) as f:
                for line in f:
                    if line.startswith('Pss:'):
                        total += int(line.split()[1]) / 1024.0
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


def reset_hwm(pid):
    try:
        with open('/proc/%d/clear_refs' % pid, 'w') as f:
            f.write('5')
        return True
    except OSError as e:
        log('clear_refs failed:', e)
        return False


def du(paths):
    total = 0
    for p in paths:
        if os.path.isfile(p):
            total += os.path.getsize(p)
        elif os.path.isdir(p):
            for root, _, files in os.walk(p):
                for f in files:
                    try:
                        total += os.path.getsize(os.path.join(root, f))
                    except OSError:
                        pass
    return total


TCK = os.sysconf('SC_CLK_TCK')


def sys_busy():
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / TCK


def pid_cpu(pid):
    """User + system CPU seconds of one process (its own, not its children's)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TCK
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def loadavg():
    with open('/proc/loadavg') as f:
        return ' '.join(f.read().split()[:3])


def wait_quiet(max_wait, threshold=0.15):
    """Wait (at most max_wait s) until other processes use < threshold cores."""
    t_end = now() + max_wait
    while True:
        b0, t0 = sys_busy(), now()
        time.sleep(3)
        load = (sys_busy() - b0) / (now() - t0)
        if load < threshold or now() > t_end:
            return load
        log('machine busy (%.2f cores used by others, loadavg %s), waiting...' % (load, loadavg()))
        time.sleep(10)


def wait_for(what, timeout, cond, interval=0.02):
    deadline = now() + timeout
    while not cond():
        if now() > deadline:
            raise RuntimeError('timed out after %ss waiting for %s' % (timeout, what))
        time.sleep(interval)


class Api:
    """Minimal keep-alive HTTP/1.1 JSON client (one per system)."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def req(self, method, path, body=None, timeout=120):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=timeout)
                hdr = {}
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    hdr['Content-Type'] = 'application/json'
                self.conn.request(method, path, body=data, headers=hdr)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.05)

    def get(self, path):
        st, d = self.req('GET', path)
        if st != 200:
            raise RuntimeError('GET %s -> %s %r' % (path, st, d[:300]))
        return json.loads(d)

    def post(self, path, body):
        st, d = self.req('POST', path, body)
        if not 200 <= st < 300:
            raise RuntimeError('POST %s -> %s %r' % (path, st, d[:300]))
        return json.loads(d)

    def download(self, path):
        """GET path on a connection of its own; the body's size in bytes (not kept)."""
        c = http.client.HTTPConnection('127.0.0.1', self.port, timeout=600)
        c.request('GET', path)
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError('GET %s -> %s' % (path, r.status))
        n = 0
        while True:
            chunk = r.read(1 << 18)
            if not chunk:
                break
            n += len(chunk)
        c.close()
        return n


class Sampler(threading.Thread):
    """Peak VmRSS of some processes, sampled every `interval` s."""

    def __init__(self, pids, interval=0.02):
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.peak = {p: 0.0 for p in pids}
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            for p in self.pids:
                r = rss(p)
                if r > self.peak[p]:
                    self.peak[p] = r
            time.sleep(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.join()


def sh(*cmd, check=True, cwd=None):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    if check and r.returncode != 0:
        raise RuntimeError('%s failed rc=%s:\n%s' % (cmd, r.returncode, r.stdout[-3000:]))
    return r


def write_atomic(path, text):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the two systems


class System:
    """What a scenario needs from a system; one subclass each."""
    label = '?'
    n_true_builders = 4

    def __init__(self, work, args):
        self.work = work
        self.args = args
        self.mpid = self.wpid = 0
        self.fleet = []  # Popen of fleet slaves
        self.api = None

    def own_pids(self):
        return [self.mpid, self.wpid] + [p.pid for p in self.fleet if p.poll() is None]

    def cpu(self):
        return [pid_cpu(self.mpid), pid_cpu(self.wpid)]

    def start_fleet(self, cmds, pidfiles):
        for cmd, pf in zip(cmds, pidfiles):
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.fleet.append(p)
            with open(pf, 'w') as f:
                f.write(str(p.pid))

    def stop_fleet(self):
        for p in self.fleet:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.fleet:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.fleet = []

    def wait_all(self, handles, interval):
        """Until every request in `handles` is complete, polled every `interval` s."""
        raise NotImplementedError


class Buildbot(System):
    label = 'buildbot'

    def __init__(self, work, args):
        super().__init__(os.path.join(work, 'buildbot'), args)
        venv = os.path.abspath(args.venv)
        self.bb = os.path.join(venv, 'bin', 'buildbot')
        self.bbw = os.path.join(venv, 'bin', 'buildbot-worker')
        self.mdir = os.path.join(self.work, 'master')
        self.wdir = os.path.join(self.work, 'worker')
        self.params = {
            'www_port': free_port(), 'pb_port': free_port(), 'max_builds': 1,
            'collapse': False, 'extra_workers': 0, 'n_true_builders': self.n_true_builders,
            'log_bytes': args.log_bytes,
        }

    def write_params(self):
        write_atomic(os.path.join(self.mdir, 'bench.json'), json.dumps(self.params))

    def reconfig(self, **kw):
        self.params.update(kw)
        self.write_params()
        r = sh(self.bb, 'reconfig', self.mdir, check=False)
        if 'configuration update complete' not in r.stdout and r.returncode != 0:
            raise RuntimeError('buildbot reconfig failed: ' + r.stdout[-2000:])

    def create(self):
        os.makedirs(self.work)
        sh(self.bb, 'create-master', '-r', self.mdir)
        shutil.copy(os.path.join(HERE, 'master.cfg'), os.path.join(self.mdir, 'master.cfg'))
        self.write_params()
        sh(self.bb, 'checkconfig', self.mdir)
        sh(self.bbw, 'create-worker', '--umask=0o22', self.wdir,
           '127.0.0.1:%d' % self.params['pb_port'], 'w1', 'pass')

    @staticmethod
    def read_pid(d):
        with open(os.path.join(d, 'twistd.pid')) as f:
            return int(f.read().strip())

    def start_master(self):
        sh(self.bb, 'start', self.mdir)
        self.api = Api(self.params['www_port'])
        self.mpid = self.read_pid(self.mdir)

    def start_worker(self):
        sh(self.bbw, 'start', self.wdir)

    def after_worker_connected(self):
        self.wpid = self.read_pid(self.wdir)

    def connected(self):
        r = self.api.get('/api/v2/workers?field=name&field=connected_to')
        return {w['name'] for w in r['workers'] if w['connected_to']}

    def builder(self, key):
        return key

    def force(self, key):
        body = {'jsonrpc': '2.0', 'method': 'force', 'id': 1,
                'params': {'builderNames': [self.builder(key)]}}
        r = self.api.post('/api/v2/forceschedulers/force', body)
        if 'result' not in r:
            raise RuntimeError('force failed: %r' % r)
        _, brids = r['result']
        return list(brids.values())[0]

    def complete(self, brid):
        r = self.api.get('/api/v2/buildrequests/%d?field=complete' % brid)
        return r['buildrequests'][0]['complete']

    def wait_all(self, handles, interval):
        # as the Buildbot bench: until no incomplete request is left
        while True:
            r = self.api.get('/api/v2/buildrequests?complete=false&limit=1'
                             '&field=buildrequestid&field=complete')
            if not r['buildrequests']:
                return
            time.sleep(interval)

    def outcome(self, handles):
        """(builds created, builds that succeeded) for these requests."""
        created = ok = 0
        for brid in handles:
            bs = self.api.get('/api/v2/buildrequests/%d/builds?field=results' % brid)['builds']
            created += len(bs)
            ok += sum(1 for b in bs if b['results'] == 0)
        return created, ok

    def set_max_builds(self, n):
        self.reconfig(max_builds=n)

    def history_paths(self):
        bid = self.api.get('/api/v2/builders?name=b0')['builders'][0]['builderid']
        return [('history_api_builder_builds_limit100',
                 '/api/v2/builders/%d/builds?limit=100&order=-number' % bid),
                ('history_api_all_builds_limit100', '/api/v2/builds?limit=100&order=-buildid'),
                ('history_www_root', '/')]

    def log_storage(self):
        return [os.path.join(self.mdir, f) for f in
                ('state.sqlite', 'state.sqlite-wal', 'state.sqlite-shm')]

    def log_result(self, brid):
        """(result ok?, step seconds as the API reports them, download path)"""
        b = self.api.get('/api/v2/buildrequests/%d/builds' % brid)['builds'][0]
        steps = self.api.get('/api/v2/builds/%d/steps' % b['buildid'])['steps']
        step = [s for s in steps if s['name'] == 'log100m'][0]
        logs = self.api.get('/api/v2/steps/%d/logs' % step['stepid'])['logs']
        stdio = [lg for lg in logs if lg['name'] == 'stdio'][0]
        return (b['results'] == 0, step['complete_at'] - step['started_at'],
                '/api/v2/logs/%d/raw' % stdio['logid'])

    def prepare_fleet(self, n, kind):
        assert kind == 'native'
        self.reconfig(extra_workers=n)
        base = os.path.join(self.work, 'fleet')
        os.makedirs(base)
        tmpl = os.path.join(base, 'x00')
        sh(self.bbw, 'create-worker', '--umask=0o22', tmpl,
           '127.0.0.1:%d' % self.params['pb_port'], 'x00', 'pass')
        with open(os.path.join(tmpl, 'buildbot.tac')) as f:
            tac = f.read()
        for i in range(1, n):
            d = os.path.join(base, 'x%02d' % i)
            os.makedirs(d)
            with open(os.path.join(d, 'buildbot.tac'), 'w') as f:
                f.write(tac.replace("workername = 'x00'", "workername = 'x%02d'" % i))
            shutil.copytree(os.path.join(tmpl, 'info'), os.path.join(d, 'info'))
        names = ['x%02d' % i for i in range(n)]
        cmds = [[self.bbw, 'start', '--nodaemon', os.path.join(base, x)] for x in names]
        pidfiles = [os.path.join(base, x, 'fleet.pid') for x in names]
        return names, cmds, pidfiles

    def fan_keys(self, names):
        # one builder 'fan' on all the fleet's workers: n requests, one per worker
        return ['fan'] * len(names)

    def stop(self):
        self.stop_fleet()
        if os.path.exists(os.path.join(self.wdir, 'twistd.pid')):
            sh(self.bbw, 'stop', self.wdir, check=False)
        if os.path.exists(os.path.join(self.mdir, 'twistd.pid')):
            sh(self.bb, 'stop', self.mdir, check=False)


class Autobot(System):
    label = 'autobot'

    def __init__(self, work, args):
        super().__init__(os.path.join(work, 'autobot'), args)
        self.exe = os.path.abspath(args.autobot)
        venv = os.path.abspath(args.venv)
        self.bbw = os.path.join(venv, 'bin', 'buildbot-worker')
        self.mdir = os.path.join(self.work, 'master')
        self.wdir = os.path.join(self.work, 'slave')
        self.sp, self.hp, self.pp = free_port(), free_port(), free_port()
        self.max_builds = 1
        self.fleet_names = []

    def ini(self):
        out = ['; written by bench/compare/bench.py', '[:master:]',
               'slaveport = %d' % self.sp,
               'htmlport = %d' % self.hp, 'publichtmlport = %d' % self.pp,
               'password = pass', 'max_builds = %d' % self.max_builds, '',
               '[slave:w1]', 'factories = %s log' % ' '.join(
                   'b%d' % i for i in range(self.n_true_builders)), '']
        for n in self.fleet_names:
            out += ['[slave:%s]' % n, 'factories = fan', 'max_builds = 1', '']
        for i in range(self.n_true_builders):
            out += ['[b%d]' % i, 'type = shell', 'step.true = true', '']
        # `sh -c "…"`: the same pipe whether master.ini's command strings are split
        # into argv or run through /bin/sh -c
        out += ['[log]', 'type = shell',
                'step.log100m = sh -c "yes %s | head -c %d"' % (LINE, self.args.log_bytes), '']
        if self.fleet_names:
            out += ['[fan]', 'type = shell', 'step.true = true', '']
        return '\n'.join(out)

    def write_ini(self):
        write_atomic(os.path.join(self.mdir, 'master.ini'), self.ini())

    def create(self):
        os.makedirs(self.mdir)
        self.write_ini()
        sh(self.exe, 'checkconfig', self.mdir)
        sh(self.exe, 'create-slave', self.wdir, '127.0.0.1:%d' % self.sp, 'w1', 'pass')

    @staticmethod
    def read_pid(d):
        with open(os.path.join(d, 'autobot.pid')) as f:
            return int(f.read().strip())

    def start_master(self):
        sh(self.exe, 'start', self.mdir)
        self.api = Api(self.hp)
        self.mpid = self.read_pid(self.mdir)

    def start_worker(self):
        sh(self.exe, 'start', self.wdir)

    def after_worker_connected(self):
        self.wpid = self.read_pid(self.wdir)

    def connected(self):
        return {s['name'] for s in self.api.get('/api/v1/slaves') if s['connected']}

    def reconfig(self):
        self.write_ini()
        sh(self.exe, 'reconfig', self.mdir)

    def builder(self, key):
        # autobot names a builder FACTORY-SLAVE
        return key if '-' in key else key + '-w1'

    def force(self, key):
        r = self.api.post('/api/v1/builders/%s/force' % self.builder(key), {})
        return r['request_id']

    def request(self, rid):
        return self.api.get('/api/v1/buildrequests/%d' % rid)

    def complete(self, rid):
        return self.request(rid)['complete']

    def wait_all(self, handles, interval):
        # the oldest request not known complete, polled every `interval` s
        pending = list(handles)
        while pending:
            if self.complete(pending[0]):
                pending.pop(0)
            else:
                time.sleep(interval)

    def outcome(self, handles):
        created = ok = 0
        for rid in handles:
            r = self.request(rid)
            created += len(r['builds'])
            ok += 1 if r['result'] == 'success' else 0
        return created, ok

    def set_max_builds(self, n):
        self.max_builds = n
        self.reconfig()

    def history_paths(self):
        return [('history_api_builder_builds_limit100', '/api/v1/builders/b0-w1/builds?limit=100'),
                ('history_www_root', '/')]

    def log_storage(self):
        return [os.path.join(self.mdir, f) for f in
                ('state.sqlite', 'state.sqlite-wal', 'state.sqlite-shm', 'logs')]

    def log_result(self, rid):
        r = self.request(rid)
        number = r['builds'][-1]
        b = self.api.get('/api/v1/builders/log-w1/builds/%d' % number)
        step = [s for s in b['steps'] if s['name'] == 'log100m'][0]
        return (r['result'] == 'success', step['finished_at'] - step['started_at'],
                '/api/v1/builders/log-w1/builds/%d/steps/log100m/logs/stdio' % number)

    def prepare_fleet(self, n, kind):
        prefix = {'native': 'x', 'buildbot-worker': 'y'}[kind]
        names = ['%s%02d' % (prefix, i) for i in range(n)]
        self.fleet_names = names
        self.reconfig()
        base = os.path.join(self.work, 'fleet-' + kind)
        os.makedirs(base)
        if kind == 'native':
            for x in names:
                sh(self.exe, 'create-slave', os.path.join(base, x),
                   '127.0.0.1:%d' % self.sp, x, 'pass')
            cmds = [[self.exe, 'run', os.path.join(base, x)] for x in names]
        else:
            tmpl = os.path.join(base, names[0])
            sh(self.bbw, 'create-worker', '--umask=0o22', '--protocol', 'msgpack_experimental_v7',
               tmpl, '127.0.0.1:%d' % self.sp, names[0], 'pass')
            with open(os.path.join(tmpl, 'buildbot.tac')) as f:
                tac = f.read()
            for x in names[1:]:
                d = os.path.join(base, x)
                os.makedirs(d)
                with open(os.path.join(d, 'buildbot.tac'), 'w') as f:
                    f.write(tac.replace("workername = '%s'" % names[0], "workername = '%s'" % x))
                shutil.copytree(os.path.join(tmpl, 'info'), os.path.join(d, 'info'))
            cmds = [[self.bbw, 'start', '--nodaemon', os.path.join(base, x)] for x in names]
        pidfiles = [os.path.join(base, x, 'fleet.pid') for x in names]
        return names, cmds, pidfiles

    def fan_keys(self, names):
        return ['fan-%s' % x for x in names]

    def stop(self):
        self.stop_fleet()
        for d in (self.wdir, self.mdir):
            if os.path.exists(os.path.join(d, 'autobot.pid')):
                sh(self.exe, 'stop', d, check=False)


# ---------------------------------------------------------------- scenarios


def sc_startup(s):
    t0 = now()
    s.start_master()
    t1 = now()
    s.start_worker()
    wait_for('w1 to connect', 120, lambda: 'w1' in s.connected())
    t2 = now()
    s.after_worker_connected()
    emit(s.label, 'startup_master_cmd', t1 - t0, 's')
    emit(s.label, 'startup_worker_connect_after_master', t2 - t1, 's')
    emit(s.label, 'startup_total_to_worker_connected', t2 - t0, 's')


def sc_idle(s, settle):
    time.sleep(settle)  # "settled": the figure is what an idle daemon holds after start
    emit(s.label, 'idle_master_rss', rss(s.mpid), 'MiB')
    emit(s.label, 'idle_worker_rss', rss(s.wpid), 'MiB')
    emit(s.label, 'idle_master_tree_pss', tree_pss(s.mpid), 'MiB')
    emit(s.label, 'idle_worker_tree_pss', tree_pss(s.wpid), 'MiB')


def warmup(s):
    # the first build on each builder creates its builddir on the slave: not counted
    for i in range(s.n_true_builders):
        h = s.force('b%d' % i)
        wait_for('warm-up build', 120, lambda: s.complete(h), 0.05)


def sc_latency(s, n=20, interval=0.01):
    lat = []
    for _ in range(n):
        time.sleep(0.3)  # builds 0.3 s apart, as the Buildbot bench
        t0 = now()
        h = s.force('b0')
        while not s.complete(h):
            time.sleep(interval)
        lat.append(now() - t0)
    lat.sort()
    emit(s.label, 'latency_true_median', statistics.median(lat) * 1000, 'ms')
    emit(s.label, 'latency_true_min', lat[0] * 1000, 'ms')
    emit(s.label, 'latency_true_max', lat[-1] * 1000, 'ms')


def sc_throughput(s, tag, n, poll=0.05):
    keys = ['b%d' % i for i in range(s.n_true_builders)]
    sampler = Sampler([s.mpid, s.wpid], 0.05)
    sampler.start()
    c0 = s.cpu()
    t0 = now()
    handles = [s.force(keys[i % len(keys)]) for i in range(n)]
    t_sub = now() - t0
    s.wait_all(handles, poll)
    t1 = now()
    c1 = s.cpu()
    sampler.stop()
    wall = t1 - t0
    created, ok = s.outcome(handles)
    if ok != n:
        raise RuntimeError('%s %s: %d of %d builds succeeded' % (s.label, tag, ok, n))
    emit(s.label, '%s_wall' % tag, wall, 's')
    emit(s.label, '%s_rate' % tag, n / wall, 'builds/s')
    emit(s.label, '%s_submit' % tag, t_sub, 's')
    emit(s.label, '%s_after_last_submit' % tag, wall - t_sub, 's')
    emit(s.label, '%s_builds_success' % tag, ok, 'builds')
    emit(s.label, '%s_master_cpu_per_build' % tag, (c1[0] - c0[0]) / n * 1000, 'cpu_ms')
    emit(s.label, '%s_worker_cpu_per_build' % tag, (c1[1] - c0[1]) / n * 1000, 'cpu_ms')
    emit(s.label, '%s_master_peak_rss' % tag, sampler.peak[s.mpid], 'MiB')
    emit(s.label, '%s_master_rss_after' % tag, rss(s.mpid), 'MiB')


def sc_history(s, n=10):
    for name, path in s.history_paths():
        ts, size = [], 0
        for _ in range(n):
            t0 = now()
            st, d = s.api.req('GET', path)
            ts.append(now() - t0)
            if st != 200:
                raise RuntimeError('%s -> %s' % (path, st))
            size = len(d)
        emit(s.label, name + '_median', statistics.median(ts) * 1000, 'ms')
        emit(s.label, name + '_bytes', size, 'bytes')


def sc_fleet(s, n, kind):
    tag = 'fleet%d' % n if kind == 'native' else 'fleet%d_bbworker' % n
    names, cmds, pidfiles = s.prepare_fleet(n, kind)
    time.sleep(2)  # let the reconfigured master settle before its RSS is read
    m0 = rss(s.mpid)
    want = set(names)
    t0 = now()
    s.start_fleet(cmds, pidfiles)
    got = set()
    deadline = t0 + s.args.fleet_timeout
    while now() < deadline:
        got = s.connected() & want
        if len(got) == n:
            break
        time.sleep(0.1)
    t1 = now()
    if len(got) < n:
        raise RuntimeError('%s %s: only %d/%d connected' % (s.label, tag, len(got), n))
    time.sleep(2)
    emit(s.label, '%s_all_connected_time' % tag, t1 - t0, 's')
    emit(s.label, '%s_master_rss_before' % tag, m0, 'MiB')
    emit(s.label, '%s_master_rss' % tag, rss(s.mpid), 'MiB')
    sizes = [rss(p.pid) for p in s.fleet]
    emit(s.label, '%s_worker_rss_mean' % tag, sum(sizes) / len(sizes), 'MiB')
    # one `true` build on every fleet slave
    t0 = now()
    handles = [s.force(k) for k in s.fan_keys(names)]
    s.wait_all(handles, 0.05)
    t1 = now()
    created, ok = s.outcome(handles)
    if ok != n:
        raise RuntimeError('%s %s fan-out: %d of %d builds succeeded' % (s.label, tag, ok, n))
    emit(s.label, '%s_fan_builds_wall' % tag, t1 - t0, 's')
    s.stop_fleet()


def sc_log(s):
    storage = s.log_storage()
    db0 = du(storage)
    hwm_ok = reset_hwm(s.mpid) and reset_hwm(s.wpid)
    m0 = rss(s.mpid)
    sampler = Sampler([s.mpid, s.wpid], 0.02)
    sampler.start()
    c0 = s.cpu()
    t0 = now()
    h = s.force('log')
    while not s.complete(h):
        time.sleep(0.05)
    t1 = now()
    c1 = s.cpu()
    sampler.stop()
    m1, w1 = proc_status(s.mpid), proc_status(s.wpid)
    time.sleep(1)
    db1 = du(storage)
    ok, step_secs, path = s.log_result(h)
    if not ok:
        raise RuntimeError('%s: the 100 MB log build failed' % s.label)
    emit(s.label, 'log100m_build_wall', t1 - t0, 's')
    emit(s.label, 'log100m_step_reported', step_secs, 's')
    emit(s.label, 'log100m_master_cpu', c1[0] - c0[0], 'cpu_s')
    emit(s.label, 'log100m_worker_cpu', c1[1] - c0[1], 'cpu_s')
    emit(s.label, 'log100m_master_rss_before', m0, 'MiB')
    emit(s.label, 'log100m_master_peak_rss_sampled', sampler.peak[s.mpid], 'MiB')
    if hwm_ok:
        emit(s.label, 'log100m_master_peak_rss_hwm', m1['VmHWM'], 'MiB')
        emit(s.label, 'log100m_worker_peak_rss_hwm', w1['VmHWM'], 'MiB')
    emit(s.label, 'log100m_master_rss_after', m1['VmRSS'], 'MiB')
    emit(s.label, 'log100m_storage_growth', (db1 - db0) / 1e6, 'MB')
    reset_hwm(s.mpid)
    sampler = Sampler([s.mpid], 0.02)
    sampler.start()
    t0 = now()
    got = s.api.download(path)
    t1 = now()
    sampler.stop()
    if got < s.args.log_bytes:
        raise RuntimeError('%s: downloaded %d of %d bytes' % (s.label, got, s.args.log_bytes))
    emit(s.label, 'log100m_download', t1 - t0, 's')
    emit(s.label, 'log100m_download_bytes', got, 'bytes')
    if hwm_ok:
        emit(s.label, 'log100m_download_master_peak_rss_hwm', proc_status(s.mpid)['VmHWM'], 'MiB')
    time.sleep(s.args.settle)
    emit(s.label, 'log100m_master_rss_settled', rss(s.mpid), 'MiB')


# ---------------------------------------------------------------- the table

def table_rows(builds, fleet, log_bytes):
    """(label, autobot figure, lower is better?, Buildbot figure) for the table."""
    f, mb = 'fleet%d' % fleet, '%g MB' % (log_bytes / 1e6)
    rows = [
        ('startup: master start command returns (s)', 'startup_master_cmd', True),
        ('startup: start → slave connected (s)', 'startup_total_to_worker_connected', True),
        ('idle master RSS (MiB)', 'idle_master_rss', True),
        ('idle slave RSS (MiB)', 'idle_worker_rss', True),
        ('idle master, PSS of its process tree (MiB)', 'idle_master_tree_pss', True),
        ('idle slave, PSS of its process tree (MiB)', 'idle_worker_tree_pss', True),
        ('force → finished, median of 20 (ms)', 'latency_true_median', True),
        ('force → finished, max of 20 (ms)', 'latency_true_max', True),
        ('%d builds, 1 per slave at once (builds/s)' % builds, 'tput_mb1_rate', False),
        ('%d builds, 4 per slave at once (builds/s)' % builds, 'tput_mb4_rate', False),
        ('master CPU per build, 1 at once (ms)', 'tput_mb1_master_cpu_per_build', True),
        ('master CPU per build, 4 at once (ms)', 'tput_mb4_master_cpu_per_build', True),
        ('slave CPU per build, 4 at once (ms)', 'tput_mb4_worker_cpu_per_build', True),
        ('master peak RSS, %d builds 4 at once (MiB)' % builds, 'tput_mb4_master_peak_rss', True),
        ('API: newest 100 builds of a builder (ms)',
         'history_api_builder_builds_limit100_median', True),
        ('GET / (Buildbot: 2 KB app shell; autobot: waterfall) (ms)',
         'history_www_root_median', True),
        ('%d slaves started at once → all connected (s)' % fleet, f + '_all_connected_time', True),
        ('master RSS with %d more slaves connected (MiB)' % fleet, f + '_master_rss', True),
        ('mean RSS of a fleet slave (MiB)', f + '_worker_rss_mean', True),
        ('%d builds fanned out, one per fleet slave (s)' % fleet, f + '_fan_builds_wall', True),
        ('%d stock buildbot-workers → all connected (s)' % fleet,
         f + '_bbworker_all_connected_time', True, f + '_all_connected_time'),
        ('master RSS with %d buildbot-workers connected (MiB)' % fleet,
         f + '_bbworker_master_rss', True, f + '_master_rss'),
        ('%d builds fanned out to stock buildbot-workers (s)' % fleet,
         f + '_bbworker_fan_builds_wall', True, f + '_fan_builds_wall'),
        ('%s log: force → finished (s)' % mb, 'log100m_build_wall', True),
        ('%s log: master CPU (s)' % mb, 'log100m_master_cpu', True),
        ('%s log: master peak RSS (MiB)' % mb, 'log100m_master_peak_rss_hwm', True),
        ('%s log: master RSS after, settled (MiB)' % mb, 'log100m_master_rss_settled', True),
        ('%s log: storage growth (MB; Buildbot gzips)' % mb, 'log100m_storage_growth', True),
        ('%s log: downloaded back (s)' % mb, 'log100m_download', True),
    ]
    return [r if len(r) == 4 else r + (r[1],) for r in rows]


def fmt(v):
    if v is None:
        return '—'
    if isinstance(v, int) or abs(v) >= 100:
        return '%.0f' % v
    if abs(v) >= 10:
        return '%.1f' % v
    return '%.2f' % v if abs(v) >= 1 else '%.3f' % v


def table(args):
    rows = ['| figure | buildbot | autobot | ratio |', '|---|---:|---:|---:|']
    for label, fig, lower, bfig in table_rows(args.builds, args.fleet, args.log_bytes):
        b = RESULTS.get(bfig, {}).get('buildbot', (None,))[0]
        a = RESULTS.get(fig, {}).get('autobot', (None,))[0]
        ratio = '—'
        if a is not None and b is not None and a > 0 and b > 0:
            r = b / a if lower else a / b
            ratio = '%.0f×' % r if r >= 100 else '%.1f×' % r if r >= 0.95 else '%.2f×' % r
        rows.append('| %s | %s | %s | %s |' % (label, fmt(b), fmt(a), ratio))
    return '\n'.join(rows)


def machine():
    cpu = '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemTotal:'):
                mem = int(line.split()[1]) / 1024 / 1024
    return 'nproc %d, %s, %.1f GiB RAM, Linux %s' % (os.cpu_count(), cpu, mem, platform.release())


# ---------------------------------------------------------------- main


def main():
    global _capture
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--venv', required=True, help='venv with buildbot and buildbot-worker')
    ap.add_argument('--autobot', required=True, help='the autobot binary to measure')
    ap.add_argument('--work', required=True, help='scratch directory (wiped)')
    ap.add_argument('--builds', type=int, default=200)
    ap.add_argument('--log-bytes', type=int, default=100_000_000)
    ap.add_argument('--fleet', type=int, default=50)
    ap.add_argument('--no-bbworker-fleet', action='store_true',
                    help='skip the stock buildbot-worker fleet against autobot')
    ap.add_argument('--fleet-timeout', type=float, default=300)
    ap.add_argument('--settle', type=float, default=5)
    ap.add_argument('--quiet-wait', type=float, default=600,
                    help='max seconds to wait for other CPU load to go away before starting')
    ap.add_argument('--quiet-wait-between', type=float, default=60,
                    help='same, before each scenario (0 = never wait)')
    ap.add_argument('--max-foreign', type=float, default=0.25,
                    help='re-run a repeatable scenario if others used more cores than this')
    ap.add_argument('--retries', type=int, default=1)
    ap.add_argument('--table', help='also write the final table (markdown) to this file')
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)

    started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    log('machine:', machine())
    log('loadavg at start:', loadavg())
    pre = wait_quiet(args.quiet_wait)
    emit('-', 'pre_run_foreign_load', pre, 'cores')
    load_start = loadavg()
    systems = [Buildbot(work, args), Autobot(work, args)]
    T0 = now()
    foreign_max = 0.0

    def sc(tag, fn, *a, retry=False, only=None):
        """Run scenario `fn` on each system, Buildbot first. Other sessions may share
        the machine: wait for quiet, measure the CPU others used meanwhile
        (<tag>_foreign_load), re-run a repeatable scenario once when above
        --max-foreign."""
        global _capture
        nonlocal foreign_max
        for s in systems:
            if only is not None and s.label != only:
                continue
            for attempt in range(1 + (args.retries if retry else 0)):
                if args.quiet_wait_between > 0:
                    wait_quiet(args.quiet_wait_between)
                _capture = []
                mine = lambda: (sum(pid_cpu(p) for q in systems for p in q.own_pids() if p)
                                + sum(os.times()[:4]))
                b0, o0, t0 = sys_busy(), mine(), now()
                ok = False
                try:
                    fn(s, *a)
                    ok = True
                finally:
                    lines, _capture = _capture, None
                    if not ok:
                        print('\n'.join(lines), flush=True)
                foreign = max((sys_busy() - b0) - (mine() - o0), 0.0) / max(now() - t0, 1e-3)
                if foreign <= args.max_foreign or not retry or attempt == args.retries:
                    break
                log('%s %s: others used %.2f cores > %.2f, re-running'
                    % (s.label, tag, foreign, args.max_foreign))
            foreign_max = max(foreign_max, foreign)
            lines.append('%s %s_foreign_load %.3f cores' % (s.label, tag, foreign))
            for line in lines:
                print(line, flush=True)

    try:
        for s in systems:
            s.create()
        sc('startup', sc_startup)
        sc('idle', sc_idle, args.settle)
        for s in systems:
            warmup(s)
        sc('latency', sc_latency, retry=True)
        sc('tput_mb1', sc_throughput, 'tput_mb1', args.builds, retry=True)
        for s in systems:
            s.set_max_builds(4)
        sc('tput_mb4', sc_throughput, 'tput_mb4', args.builds, retry=True)
        sc('history', sc_history, retry=True)
        if args.fleet > 0:
            # fleet before the log: CPython keeps the RSS the 100 MB log pushed it to
            sc('fleet', sc_fleet, args.fleet, 'native')
            if not args.no_bbworker_fleet:
                sc('fleet_bbworker', sc_fleet, args.fleet, 'buildbot-worker', only='autobot')
        if args.log_bytes > 0:
            sc('log100m', sc_log, retry=True)
    finally:
        for s in systems:
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                log('stopping %s: %s' % (s.label, e))
    total = now() - T0
    emit('-', 'bench_total', total, 's')
    out = ['',
           'Buildbot 4.3.0 (buildbot-worker 4.3.0, Python %s) and autobot %s, one run, %s'
           % (platform.python_version(), autobot_version(args.autobot), started),
           'machine: %s' % machine(),
           'load average at start %s (before waiting for quiet), at the first scenario %s, '
           'at the end %s; most CPU others used during a scenario: %.2f cores'
           % (LOAD0, load_start, loadavg(), foreign_max),
           'ratio: how many times better autobot is (Buildbot/autobot for times and sizes, '
           'autobot/Buildbot for rates)',
           '', table(args)]
    text = '\n'.join(out)
    print(text, flush=True)
    if args.table:
        with open(args.table, 'w') as f:
            f.write(text.lstrip('\n') + '\n')


def autobot_version(exe):
    r = sh(exe, '--version', check=False)
    return r.stdout.strip().split()[-1] if r.returncode == 0 and r.stdout.strip() else '?'


LOAD0 = loadavg()

if __name__ == '__main__':
    main()
