"""The ``warden`` command line, on top of every other package (it may import any of them)."""
