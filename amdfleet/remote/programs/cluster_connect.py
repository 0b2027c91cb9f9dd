
import errno, socket, sys
head, timeout, own = sys.argv[1], float(sys.argv[2]), sys.argv[3]
try:
    for info in socket.getaddrinfo(own, None, 0, socket.SOCK_STREAM):
        print("AMDFLEET_RESOLVED", info[4][0])
except OSError:
    pass
for port in [int(p) for p in sys.argv[4:]]:
    try:
        sock = socket.create_connection((head, port), timeout)
    except socket.timeout:
        print("AMDFLEET_CONNECT", port, "timeout", "no answer within %g s" % timeout)
    except ConnectionRefusedError as e:
        print("AMDFLEET_CONNECT", port, "refused", e.strerror or e)
    except socket.gaierror as e:
        print("AMDFLEET_CONNECT", port, "resolve", e.strerror or e)
    except OSError as e:
        kind = "unreachable" if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
        print("AMDFLEET_CONNECT", port, kind, e.strerror or e)
    else:
        print("AMDFLEET_CONNECT", port, "ok", sock.getsockname()[0])
        sock.close()
    sys.stdout.flush()
