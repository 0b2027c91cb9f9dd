
import errno, os, re, selectors, signal, socket, subprocess, sys, time
address, lifetime, expected, pid_file, container_pid, mode = sys.argv[1:7]
ports = [int(p) for p in sys.argv[7:]]
lifetime, expected, container_pid = float(lifetime), int(expected), int(container_pid or 0)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
def say(*words):
    print("AMDFLEET_LISTEN", *words, flush=True)
def holder(port):
    try:
        out = subprocess.run(["ss", "-Hltnp", "sport", "=", ":%d" % port],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'users:\(\("(.*?)",pid=(\d+)', out)
    if found:
        return int(found.group(2)), found.group(1)
    return (0, "") if out.strip() else None
def parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0
def pid_ns(pid):
    try:
        return os.readlink("/proc/%d/ns/pid" % pid)
    except OSError:
        return None
def engine_group():
    try:
        with open(pid_file) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
def is_engine(pid):
    group, p = engine_group(), pid
    while group is not None and p > 1:
        try:
            if os.getpgid(p) == group:
                return True
        except OSError:
            break
        p = parent(p)
    ns = pid_ns(container_pid) if container_pid > 0 else None
    return ns is not None and ns != pid_ns(os.getpid()) and ns == pid_ns(pid)
def report_holder(port, bound_failed):
    found = holder(port)
    if found is None:
        if bound_failed:
            say(port, "foreign", 0, "")
        else:
            say(port, "free")
    elif found[0] and is_engine(found[0]):
        say(port, "engine", found[0], found[1])
    else:
        say(port, "foreign", found[0], found[1])
socks = {}
for port in ports:
    if mode != "bind":
        report_holder(port, False)
        continue
    try:
        family, kind, proto, _, where = socket.getaddrinfo(address, port, 0, socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        say(port, "error", e.strerror or e)
        continue
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(64)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            report_holder(port, True)
        else:
            say(port, "unavailable" if e.errno == errno.EADDRNOTAVAIL else "error", e.strerror or e)
        continue
    sock.setblocking(False)
    socks[port] = sock
    say(port, "listening")
say("ready", os.getpid())
selector = selectors.DefaultSelector()
for port, sock in socks.items():
    selector.register(sock, selectors.EVENT_READ, port)
counts = dict.fromkeys(socks, 0)
deadline = time.monotonic() + lifetime
while counts and min(counts.values()) < expected and time.monotonic() < deadline:
    for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
        try:
            conn, peer = key.fileobj.accept()
        except OSError:
            continue
        conn.close()
        counts[key.data] += 1
        say(key.data, "accepted", peer[0])
