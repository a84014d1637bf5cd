"""Worker processes: a supervisor and N data-plane workers sharing the gateway's ports."""
