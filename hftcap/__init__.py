"""hftcap: wire-to-book market-data capture with XDP, AF_XDP and honest per-hop latency."""
__version__ = "0.1.0"
