"""Benchmarks of cnnlab against its peers, run on one machine in one session.

`python -m bench` runs them all and writes each one's table (Markdown and JSON) to bench/out/.
"""
