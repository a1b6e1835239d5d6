"""Work that runs beside requests: scheduler, demo data, exports."""
