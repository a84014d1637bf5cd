"""Worker processes: a supervisor runs the control plane, N workers run the data plane."""
