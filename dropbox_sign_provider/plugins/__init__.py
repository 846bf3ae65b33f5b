"""
The Airflow plugin of the provider: Dropbox Sign's callback receiver, mounted on Airflow's API server.

* :mod:`~dropbox_sign_provider.plugins.callbacks`: the HTTP endpoint and the plugin that mounts it;
* :mod:`~dropbox_sign_provider.events.accounts`: which accounts' events are accepted, and their keys;
* :mod:`~dropbox_sign_provider.events.recording`: what a verified event leaves in Airflow's database.
"""
