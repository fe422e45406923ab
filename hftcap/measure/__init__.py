"""Measurement: clocks, latency histograms and hops, the bench, the kernel-path tracer and plots."""
