
import sys, urllib.request, urllib.error
header = sys.stdin.readline().strip()
request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST")
request.add_header("Content-Type", "application/json")
if ":" in header:
    name, value = header.split(":", 1)
    request.add_header(name.strip(), value.strip())
try:
    with urllib.request.urlopen(request, timeout=float(sys.argv[3])) as response:
        print(response.read(1024).decode(errors="replace")); print(response.status)
except urllib.error.HTTPError as e:
    print(e.read(1024).decode(errors="replace")); print(e.code)
except Exception:
    print(""); print(0)
