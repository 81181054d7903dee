"""Runs one of the earlier client's examples, unchanged, with each of its
threads talking to a node of its own: the first thread that makes a Cache
gets the first address given, the next the second, and so on round the
list; the main thread (which sets up and reads the result) gets the first.

    python scripts/earlier-client-per-region.py EXAMPLE.py HOST:PORT [HOST:PORT ...]

The example's own file is run as it is (runpy); only the client's default
address is chosen per thread, as three users in three regions would each
have their own node.
"""
import runpy
import sys
import threading

from geo_cache_client import cache_client

example, addresses = sys.argv[1], sys.argv[2:]
if not addresses:
    sys.exit("usage: earlier-client-per-region.py EXAMPLE.py HOST:PORT [HOST:PORT ...]")
chosen = {}
lock = threading.Lock()
original = cache_client.Cache.__init__


def per_thread(self, name, api_host="localhost", db_host=None, port=5000):
    thread = threading.current_thread()
    with lock:
        if thread.ident not in chosen:
            others = sum(1 for t in chosen if t != threading.main_thread().ident)
            index = 0 if thread is threading.main_thread() else others % len(addresses)
            chosen[thread.ident] = addresses[index]
    host, _, port_text = chosen[thread.ident].rpartition(":")
    original(self, name, api_host=host, db_host=db_host, port=int(port_text))


cache_client.Cache.__init__ = per_thread
sys.argv = [example]
runpy.run_path(example, run_name="__main__")
