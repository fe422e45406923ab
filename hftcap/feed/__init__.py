"""The feed: MoldUDP64 sequencing and what repairs it (recovery, line arbitration, snapshots)."""
