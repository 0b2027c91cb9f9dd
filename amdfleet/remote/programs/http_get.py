
import sys, urllib.request, urllib.error
header = sys.stdin.readline().strip()
request = urllib.request.Request(sys.argv[1])
if ":" in header:
    name, value = header.split(":", 1)
    request.add_header(name.strip(), value.strip())
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        print(response.read(4096).decode(errors="replace")); print(response.status)
except urllib.error.HTTPError as e:
    print(""); print(e.code)
except Exception:
    print(""); print(0)
