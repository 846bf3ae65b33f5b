"""
The domain of a cancellation, free of Airflow's operators and of HTTP: what a signature request id
may look like (:mod:`.ids`), what state an answer tells (:mod:`.state`), what became of each id
(:mod:`.outcomes`), the watch of queued cancellations and the one step every wait drives
(:mod:`.watch`, :mod:`.wait_settings`), what a person reads and approves (:mod:`.preview`,
:mod:`.approval`), the signed hand-offs between tasks (:mod:`.grants`) and the deployment's policy
(:mod:`.policy`).
"""
