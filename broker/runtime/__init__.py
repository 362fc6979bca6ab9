"""The composition: the one place that turns settings into services and picks adapters.

``core`` opens a data directory (keys, database, audit log, MDMS) as a ``Runtime``; ``wiring``
builds every service from it. Only this package and the faces (API, portal, command line) import
it: services below get their collaborators as constructor arguments.
"""
