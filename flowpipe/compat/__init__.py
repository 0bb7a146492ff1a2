"""Compatibility layers: other libraries' APIs built on flowpipe's core.

- ``flowpipe.compat.parallelpipe``: ParallelPipe's ``Stage``/``Pipeline``.
"""
