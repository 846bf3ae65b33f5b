"""
The Dropbox Sign page of the Airflow UI: what it lists (:mod:`~dropbox_sign_provider.ui.listing`),
how it is written as HTML (:mod:`~dropbox_sign_provider.ui.html`) and the app that serves it
(:mod:`~dropbox_sign_provider.ui.app`), mounted on the API server by
:class:`~dropbox_sign_provider.plugins.ui.DropboxSignUIPlugin`.
"""
