"""Reports: figures, HTML pages and exports built from a result store."""
