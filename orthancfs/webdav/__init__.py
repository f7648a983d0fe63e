"""The WebDAV frontend: the same tree model served through wsgidav on cheroot."""
