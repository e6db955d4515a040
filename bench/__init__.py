"""Speed and size benchmarks of the kit: `make bench` (`python -m bench`) prints one table."""
