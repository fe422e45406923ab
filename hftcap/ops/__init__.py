"""Operations: host audit (doctor) and metrics for a fleet."""
