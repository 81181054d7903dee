"""The earlier users' Python client against `geocache demo` (run by
scripts/check-python-client.sh). Asserts what it prints."""
from geo_cache_client import Cache
import threading
c = Cache("users", api_host="127.0.0.2", port=7070)
r = c.set("ada", {"name": "Ada", "langs": ["en", "fr"]}); print("set", r.status_code, r.json())
assert r.status_code == 201 and r.json()["rc"] == 0
r = c.get("ada"); print("get", r.status_code, r.json())
c.set_closest_server(48.85, 2.35); print("closest ->", c.api_host)
assert c.api_host in ("127.0.0.6", "127.0.0.7"), "Paris goes to a Frankfurt node"
# The demo puts the distance between regions: frankfurt has the write
# ~44 ms after montreal acked it. Wait for it, bounded.
import time
for _ in range(100):
    r = c.get("ada")
    if r.status_code == 200:
        break
    time.sleep(0.02)
print("get at closest", r.status_code, r.json()["value"])
r = c.get("nobody"); print("missing", r.status_code, r.json())
assert r.status_code == 404 and r.json() == {"key": "nobody", "rc": 13}
# Replication is asynchronous: wait (bounded) for the write in sao-paulo.
c.db_host = "sao-paulo"
for _ in range(100):
    r = c.get("ada")
    if r.status_code == 200:
        break
    time.sleep(0.05)
print("databaseHost=sao-paulo", r.status_code, r.json()["value"]); c.db_host = None
# The counter lives at montreal, where its workers talk (c was sent to
# frankfurt by set_closest_server, ~44 ms away).
c = Cache("users", api_host="127.0.0.2", port=7070)
c.set("n", 0)
def worker():
    w = Cache("users", api_host="127.0.0.2", port=7070)
    while True:
        cur = w.get("n").json()
        if cur["value"] >= 100: return
        w.set("n", cur["value"] + 1, cas=cur["cas"])
ts = [threading.Thread(target=worker) for _ in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
print("counter", c.get("n").json()["value"])
assert c.get("n").json()["value"] == 100
r = c.set("x", 1, cas=12345); print("bad cas", r.status_code, r.json())
assert r.status_code == 400 and r.json()["rc"] == 12
print("ok")
