"""Out-of-distribution detection: uncertainty scores, metrics and benchmark suites."""
