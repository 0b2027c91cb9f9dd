
import json, os, sys, threading
from huggingface_hub import constants, snapshot_download
repo, revision, every = sys.argv[1], sys.argv[2] or None, float(sys.argv[3])
blobs = os.path.join(constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"), "blobs")

def say(prefix, record):
    print(prefix + json.dumps(record), flush=True)

def expected():
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile
        tree = HfApi().list_repo_tree(repo, revision=revision, recursive=True)
        sizes = [f.size for f in tree if isinstance(f, RepoFile)]
    except Exception:
        return
    say("AMDFLEET_EXPECTED ", {"bytes": sum(sizes), "files": len(sizes)})

def staged():
    size = files = 0
    try:
        entries = list(os.scandir(blobs))
    except OSError:
        entries = []
    for entry in entries:
        try:
            size += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
        files += not entry.name.endswith(".incomplete")
    return {"bytes": size, "files": files}

def report(stop):
    expected()
    while not stop.wait(every):
        say("AMDFLEET_PROGRESS ", staged())

stop = threading.Event()
reporter = threading.Thread(target=report, args=(stop,), daemon=True)
reporter.start()
try:
    path = snapshot_download(repo_id=repo, revision=revision)
finally:
    stop.set()
    reporter.join(5)
commit = path.rstrip("/").rsplit("/", 1)[-1]
say("AMDFLEET_SNAPSHOT ", {"path": path, "commit": commit})
