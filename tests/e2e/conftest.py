"""
The end-to-end run is a script (``make e2e``), not part of the unit suite: it starts a whole
Airflow deployment and a browser. Keep a plain ``pytest`` run from collecting anything here.
"""

collect_ignore_glob = ["*.py"]
