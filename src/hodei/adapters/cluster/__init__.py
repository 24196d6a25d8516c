"""Cluster adapters: how several servers sharing one store hear of each other's events."""
