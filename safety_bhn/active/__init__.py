"""Active learning: acquisition functions and pool-based loops over posterior samples."""
