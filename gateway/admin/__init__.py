"""The admin API: its server (``server``) and the views it serves (``health``, ``views``)."""
