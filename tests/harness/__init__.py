"""Test harness: real servers (servers.py), their pytest fixtures (services.py) and the
database fixtures (databases.py).  Benchmarks import the plain helpers from here too."""
