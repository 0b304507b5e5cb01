"""HDF5 recordings: the format (schema.py), the background writer (writer.py), the reader (reader.py)."""
