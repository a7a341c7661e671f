"""Peer task queues, run with the same no-op task and nine worker slots.

Each peer module contains only this benchmark's own small task and the
settings that tune the peer for a fair comparison. None of the peers' code is
copied.
"""
