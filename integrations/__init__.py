"""Adapters to other libraries, imported on demand."""
