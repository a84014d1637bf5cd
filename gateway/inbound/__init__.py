"""Inbound: what peer gateways send this site (east-west tunnels), parsed and admitted."""
