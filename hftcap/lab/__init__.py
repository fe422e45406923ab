"""The lab: network namespaces and veth pairs, the ITCH generator and the simulated exchange."""
