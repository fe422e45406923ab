"""Measurement: clocks, latency histograms and hops, the bench and the kernel-path tracer."""
