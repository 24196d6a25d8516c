"""Worker providers: where on-demand workers come from."""
